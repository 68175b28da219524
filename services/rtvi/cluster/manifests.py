"""The producer Job `rtvi loadtest` creates, built the way the chart's producer-job.yaml
renders it (tests/test_cluster_commands.py proves the two agree)."""

from __future__ import annotations

from typing import Any

from rtvi import __version__

PODSECURITY = {
    "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def selector(release: str, component: str) -> str:
    return f"app.kubernetes.io/instance={release},app.kubernetes.io/component={component}"


def producer_job(
    *, name: str, release: str, image: str, bootstrap_servers: str, topic: str, source: str, path: str,
    synthetic_size: str, streams: int, fps: float, duration: float, jpeg_quality: int, stream_prefix: str,
    max_frame_bytes: int = 4 * 1024 * 1024, backoff_limit: int = 0, ttl_seconds: int = 3600,
) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "rtvi", "app.kubernetes.io/instance": release,
              "app.kubernetes.io/component": "producer", "app.kubernetes.io/version": __version__}
    env = [("RTVI_BOOTSTRAP_SERVERS", bootstrap_servers), ("RTVI_MAX_FRAME_BYTES", str(max_frame_bytes)),
           ("RTVI_TOPIC", topic), ("RTVI_SOURCE", source)]
    if source == "video":
        env += [("RTVI_VIDEO", path), ("RTVI_LOOP", "true")]
    elif source == "images":
        env += [("RTVI_IMAGES", path), ("RTVI_LOOP", "true")]
    env += [("RTVI_SYNTHETIC_SIZE", synthetic_size), ("RTVI_STREAMS", str(streams)), ("RTVI_FPS", f"{fps:g}"),
            ("RTVI_DURATION", f"{duration:g}"), ("RTVI_JPEG_QUALITY", str(jpeg_quality)),
            ("RTVI_STREAM_PREFIX", stream_prefix)]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "backoffLimit": backoff_limit,
            "ttlSecondsAfterFinished": ttl_seconds,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": PODSECURITY,
                    "containers": [{
                        "name": "producer",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["produce"],
                        "env": [{"name": k, "value": v} for k, v in env],
                        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
                        "securityContext": CONTAINER_SECURITY,
                    }],
                },
            },
        },
    }
