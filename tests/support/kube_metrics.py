"""The resource metrics API on the real node: metrics-server, deployed from its own manifests.

kube_build installs metrics-server from its Go module and copies the module's kustomize
tree beside the binary; node_images puts the binary in a ``FROM scratch`` image. It is
deployed with ``kubectl apply -k`` of a kustomization that builds on the module's own
``manifests/overlays/test`` (the overlay metrics-server's end-to-end tests use: its base
manifests plus ``--kubelet-insecure-tls`` and ``imagePullPolicy: Never``) and changes only
the image and the scrape interval. No CA signs the kubelet's serving certificate here (the
kubelet makes itself one), which is what ``--kubelet-insecure-tls`` accepts; that flag is
for this test cluster only, never for a real one.

The API server reaches metrics-server through the aggregation layer (support.kube_cluster:
the front-proxy CA and ``--requestheader-*`` / ``--proxy-client-*`` flags); metrics-server
reads the kubelet's ``/metrics/resource`` on the node's bridge address and port.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from support.kube_cluster import ControlPlane

IMAGE = "rtvi-metrics-server:node"
API_SERVICE = "apiservice/v1beta1.metrics.k8s.io"
# The image its manifests name (a staging registry we cannot reach).
UPSTREAM_IMAGE = "gcr.io/k8s-staging-metrics-server/metrics-server"
# How often it scrapes the kubelet: the least it accepts (its manifests say 15s), so the
# HPA sees a load within one or two intervals; a scrape must then time out well within it
# (it refuses to start otherwise). Later flags win over the manifest's.
ARGS = ("--metric-resolution=10s", "--kubelet-request-timeout=5s")


def kustomization(manifests: Path, directory: Path) -> Path:
    """A kustomization of the module's test overlay with this node's image; its directory."""
    directory.mkdir(parents=True, exist_ok=True)
    name, tag = IMAGE.split(":")
    (directory / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        # A base outside this directory is allowed by relative path (files are not).
        "resources": [os.path.relpath(manifests / "overlays" / "test", directory)],
        "images": [{"name": UPSTREAM_IMAGE, "newName": name, "newTag": tag}],
        "patches": [{
            "target": {"group": "apps", "version": "v1", "kind": "Deployment", "name": "metrics-server"},
            "patch": json.dumps([{"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": arg}
                                 for arg in ARGS]),
        }],
    }, sort_keys=False))
    return directory


def install(cluster: ControlPlane, manifests: Path, work: Path) -> None:
    """Apply it; it turns Available on its own (``wait_available``) while other things start."""
    cluster.kubectl("apply", "-k", str(kustomization(manifests, work)))


def wait_available(cluster: ControlPlane, timeout_s: float = 120) -> None:
    """Until the API server serves ``metrics.k8s.io`` through metrics-server."""
    cluster.kubectl("wait", "--for=condition=Available", API_SERVICE, f"--timeout={int(timeout_s)}s",
                    timeout=timeout_s + 30)
