"""The helper module that builds Kubernetes from the module proxy, and the per-part stamps of the cache."""

from __future__ import annotations

import json

from support import kube_build
from support.kube_build import helper_go_mod, staging_modules

KUBERNETES_GO_MOD = """module k8s.io/kubernetes

go 1.24.0

godebug default=go1.24

require (
\tgithub.com/spf13/cobra v1.9.1
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/kube-openapi => k8s.io/kube-openapi v0.0.0-20250101
)
"""


def test_staging_modules_are_read_from_the_replace_directives():
    assert staging_modules(KUBERNETES_GO_MOD) == ["k8s.io/api", "k8s.io/client-go"]


def test_helper_module_takes_each_staging_module_from_the_proxy_at_the_matching_version():
    go_mod = helper_go_mod(KUBERNETES_GO_MOD, "v1.34.4")
    lines = [line.strip() for line in go_mod.splitlines()]
    assert "require k8s.io/kubernetes v1.34.4" in lines
    assert "k8s.io/api => k8s.io/api v0.34.4" in lines
    assert "k8s.io/client-go => k8s.io/client-go v0.34.4" in lines
    assert not any("kube-openapi" in line or "./staging" in line for line in lines)
    # Kubernetes' Go language version and run-time defaults carry over to the binaries.
    assert "go 1.24.0" in lines and "godebug default=go1.24" in lines
    assert "k8s.io/kubernetes/cmd/kube-apiserver" in lines and "k8s.io/kubernetes/cmd/kubectl" in lines


def test_each_part_has_its_own_stamp_so_adding_one_never_rebuilds_another(tmp_path, monkeypatch):
    monkeypatch.setenv("RTVI_K8S_CACHE", str(tmp_path))
    assert not kube_build.is_built(kube_build.KUBERNETES) and not kube_build.is_built()
    for part in kube_build.PARTS:
        kube_build.part_dir(part).mkdir(parents=True)
    stamp = {"versions": kube_build._versions(kube_build.KUBERNETES), "build_seconds": 540}
    (kube_build.bin_dir() / kube_build.STAMP).write_text(json.dumps(stamp))
    assert kube_build.is_built(kube_build.KUBERNETES) and not kube_build.is_built()
    stamp = {"versions": {"metrics-server": "v0.8.0"}, "build_seconds": 200}  # an older metrics-server
    (kube_build.metrics_server_dir() / kube_build.STAMP).write_text(json.dumps(stamp))
    assert not kube_build.is_built(kube_build.METRICS_SERVER) and kube_build.is_built(kube_build.KUBERNETES)
    stamp = {"versions": kube_build._versions(kube_build.METRICS_SERVER), "build_seconds": 235}
    (kube_build.metrics_server_dir() / kube_build.STAMP).write_text(json.dumps(stamp))
    assert kube_build.is_built() and kube_build.build_seconds(kube_build.METRICS_SERVER) == 235
