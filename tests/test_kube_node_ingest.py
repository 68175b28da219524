"""Cameras on the real Kubernetes node: the chart's ingest Deployment reads an RTSP camera that
runs in a pod, and the chart's consumer and inference pods classify what it publishes.

The camera is the tests' own RTSP server (tests/support/rtsp_server.py, which needs only Python
and OpenCV) run from the consumer image, behind a Service, with Digest authentication whose
password comes from a Secret: the same Secret gives the ingest pod ``${CAM_PASSWORD}`` for the
camera URL in the chart's values. The broker is the node tests' Kafka pod (no Redpanda images
can be had here). The node, its images and the control plane are the session's ``kube_node``.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import yaml

from conftest import REPO, metric_sum, read_predictions
from support.node_images import KAFKA_PORT
from support.node_release import installed_release
from test_streaming_pipeline import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

NAMESPACE = "rtvi-node-ingest"
RELEASE = "cams"
INGEST = f"{RELEASE}-rtvi-ingest"
CAMERA = "gate"
PASSWORD = "node-camera-Pass-42"
RTSP_PORT = 8554


def camera_manifests(image: str) -> list[dict]:
    """The RTSP camera: the server's source in a ConfigMap, run by the consumer image's Python."""
    labels = {"app.kubernetes.io/name": "rtsp-camera"}
    script = (REPO / "tests" / "support" / "rtsp_server.py").read_text()
    command = ["/opt/rtvi/bin/python", "/opt/camera/rtsp_server.py", "--port", str(RTSP_PORT), "--path", CAMERA,
               "--size", "320x240", "--fps", "10", "--user", "viewer", "--password-env", "CAM_PASSWORD"]
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "camera-credentials"},
         "stringData": {"CAM_PASSWORD": PASSWORD}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rtsp-camera"},
         "data": {"rtsp_server.py": script}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "rtsp-camera"},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "strategy": {"type": "Recreate"},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "containers": [{
                          "name": "camera", "image": image, "imagePullPolicy": "Never", "command": command,
                          "env": [{"name": "CAM_PASSWORD", "valueFrom": {"secretKeyRef": {
                              "name": "camera-credentials", "key": "CAM_PASSWORD"}}}],
                          "ports": [{"name": "rtsp", "containerPort": RTSP_PORT}],
                          "readinessProbe": {"tcpSocket": {"port": "rtsp"}, "periodSeconds": 2},
                          "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
                          "volumeMounts": [{"name": "script", "mountPath": "/opt/camera"}],
                      }],
                      "volumes": [{"name": "script", "configMap": {"name": "rtsp-camera"}}],
                  }}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "rtsp-camera"},
         "spec": {"selector": labels, "ports": [{"name": "rtsp", "port": RTSP_PORT, "targetPort": "rtsp"}]}},
    ]


def chart_values(tags: dict[str, str]) -> dict:
    """The README's install with this node's images, one small inference pod, and one camera."""
    inference_repo, inference_tag = tags["inference-onnx"].split(":")
    consumer_repo, consumer_tag = tags["consumer"].split(":")
    return {
        "redpanda": {"enabled": False}, "kafka": {"bootstrapServers": f"kafka:{KAFKA_PORT}"},
        "inference": {"image": {"repository": inference_repo, "tag": inference_tag, "pullPolicy": "Never"},
                      "model": "/opt/model", "modelName": "resnet18", "replicas": 1,
                      "autoscaling": {"enabled": False}, "pdb": {"enabled": False},
                      "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
                      "probes": {"startup": {"periodSeconds": 2, "failureThreshold": 150},
                                 "readiness": {"periodSeconds": 2}}},
        "consumer": {"image": {"repository": consumer_repo, "tag": consumer_tag, "pullPolicy": "Never"},
                     "resources": {"requests": {"cpu": "100m"}}, "batchSize": 4, "maxInFlight": 4},
        "ingest": {"enabled": True, "credentialsSecret": "camera-credentials", "reportInterval": 5,
                   "stallTimeoutSeconds": 5, "resources": {"requests": {"cpu": "100m"}},
                   "cameras": [{"name": CAMERA, "fps": 2,
                                "url": f"rtsp://viewer:${{CAM_PASSWORD}}@rtsp-camera:{RTSP_PORT}/{CAMERA}"}],
                   "probes": {"readiness": {"periodSeconds": 2}}},
    }


@pytest.fixture(scope="module")
def release(kube_node, tmp_path_factory):
    cluster, node, tags = kube_node
    values = tmp_path_factory.mktemp("ingest-values") / "values.yaml"
    values.write_text(yaml.safe_dump(chart_values(tags)))
    with installed_release(cluster, NAMESPACE, RELEASE, {"frames": 2, "predictions": 2}, ["-f", str(values)],
                           manifests=camera_manifests(tags["consumer"]), deployments=("rtsp-camera",)) as broker:
        yield SimpleNamespace(cluster=cluster, broker=broker)


def pods(cluster, selector: str) -> list[dict]:
    return cluster.get("pods", "-n", NAMESPACE, "-l", selector)["items"]


def ingest_pod(cluster) -> str:
    return pods(cluster, f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=ingest")[0][
        "metadata"]["name"]


def ingest_get(cluster, path: str) -> str:
    """The ingest pod's /metrics or /readyz through the API server's pod proxy."""
    return cluster.kubectl("get", "--raw", f"/api/v1/namespaces/{NAMESPACE}/pods/{ingest_pod(cluster)}:9101/proxy"
                           f"{path}").stdout


def test_the_ingest_pods_frames_are_classified_by_the_charts_consumer_and_inference(release):
    cluster = release.cluster

    def classified() -> list[dict] | None:
        mine = [p for p in read_predictions(release.broker, "predictions", 10**6, timeout=3)
                if p["stream"] == CAMERA and "top" in p]
        return mine if len(mine) >= 10 else None

    predictions = wait_for(classified, 180, "10 frames of the camera classified", interval=3)
    print(f"\n{len(predictions)} frames of camera {CAMERA!r} classified, e.g. {json.dumps(predictions[-1])}")
    assert all(p["model"] == "resnet18" and p["top"] for p in predictions)
    latency = [p["latency_ms"]["capture_to_prediction"] for p in predictions]
    assert all(0 < ms < 60_000 for ms in latency), latency
    metrics = ingest_get(cluster, "/metrics")
    assert metric_sum(metrics, "rtvi_ingest_camera_up", camera=CAMERA) == 1
    assert metric_sum(metrics, "rtvi_ingest_frames_total", camera=CAMERA, outcome="published") >= 10
    ready = json.loads(ingest_get(cluster, "/readyz"))
    assert ready["broker"] == "connected" and ready["cameras"][0]["state"] == "streaming", ready


def test_a_replaced_camera_pod_is_reconnected_through_its_service(release):
    cluster = release.cluster
    before = metric_sum(ingest_get(cluster, "/metrics"), "rtvi_ingest_reconnects_total", camera=CAMERA)
    cluster.kubectl("-n", NAMESPACE, "delete", "pod", "-l", "app.kubernetes.io/name=rtsp-camera", "--wait=false")

    def back() -> bool:
        metrics = ingest_get(cluster, "/metrics")
        return metric_sum(metrics, "rtvi_ingest_reconnects_total", camera=CAMERA) > before and \
            metric_sum(metrics, "rtvi_ingest_camera_up", camera=CAMERA) == 1

    wait_for(back, 180, "the ingest pod streaming from the new camera pod", interval=2)
    log = cluster.kubectl("-n", NAMESPACE, "logs", f"deployment/{INGEST}").stdout
    assert f"streaming from rtsp://viewer:***@rtsp-camera:{RTSP_PORT}/{CAMERA}" in log, log[-2000:]
    assert PASSWORD not in log and PASSWORD not in ingest_get(cluster, "/metrics")
    restarts = pods(cluster, "app.kubernetes.io/component=ingest")[0]["status"]["containerStatuses"][0]
    assert restarts["restartCount"] == 0, "the camera's outage never restarted the ingest pod"
