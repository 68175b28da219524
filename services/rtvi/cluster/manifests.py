"""The producer Job `rtvi loadtest` creates, built the way the chart's producer-job.yaml
renders it (tests/test_cluster_commands.py proves the two agree)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rtvi import __version__

PODSECURITY = {
    "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


# The variables that carry Kafka security (rtvi.streaming.kafka_config reads them).
KAFKA_SECURITY_ENV = ("RTVI_SECURITY_PROTOCOL", "RTVI_SASL_MECHANISM", "RTVI_SASL_USERNAME", "RTVI_SASL_PASSWORD",
                      "RTVI_SSL_CA_LOCATION")


@dataclass(frozen=True)
class KafkaSecurity:
    """A container's Kafka security as Kubernetes objects: env entries (the password as a
    secretKeyRef, never its value) and the volumes and mounts its CA file lives in."""

    env: tuple[dict, ...] = ()
    volumes: tuple[dict, ...] = ()
    volume_mounts: tuple[dict, ...] = ()

    @classmethod
    def of(cls, pod_spec: dict, container: dict) -> KafkaSecurity:
        """Read from a pod template (API objects serialized to plain dicts)."""
        env = tuple(e for e in container.get("env") or () if e["name"] in KAFKA_SECURITY_ENV)
        ca = next((e.get("value") for e in env if e["name"] == "RTVI_SSL_CA_LOCATION"), None)
        mounts = tuple(m for m in container.get("volumeMounts") or ()
                       if ca and ca.startswith(m["mountPath"].rstrip("/") + "/"))
        names = {m["name"] for m in mounts}
        volumes = tuple(v for v in pod_spec.get("volumes") or () if v["name"] in names)
        return cls(env, volumes, mounts)


def selector(release: str, component: str) -> str:
    return f"app.kubernetes.io/instance={release},app.kubernetes.io/component={component}"


def producer_job(
    *, name: str, release: str, image: str, bootstrap_servers: str, topic: str, source: str, path: str,
    synthetic_size: str, streams: int, fps: float, duration: float, jpeg_quality: int, stream_prefix: str,
    max_frame_bytes: int = 4 * 1024 * 1024, backoff_limit: int = 0, ttl_seconds: int = 3600,
    kafka_security: KafkaSecurity | None = None,
) -> dict[str, Any]:
    """``kafka_security``: the consumer's SASL/TLS settings, so the producer reaches the same
    secured broker (the chart renders the same variables and CA volume for both)."""
    security = kafka_security or KafkaSecurity()
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
                        "env": [{"name": k, "value": v} for k, v in env] + list(security.env),
                        **({"volumeMounts": list(security.volume_mounts)} if security.volume_mounts else {}),
                        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
                        "securityContext": CONTAINER_SECURITY,
                    }],
                    **({"volumes": list(security.volumes)} if security.volumes else {}),
                },
            },
        },
    }
