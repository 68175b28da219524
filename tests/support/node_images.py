"""The images a real node needs besides rtvi's own, built locally (no registry is reachable).

- ``pause`` (the pod sandbox) and ``metrics-server``: ``FROM scratch`` around the static
  binaries that kube_build compiles.
- ``kafka``: the Apache Kafka broker of the reliability tests (the same Maven Central jars
  and KRaft settings as support.kafka_broker) on the Debian base with Debian's Java 17.
  The Redpanda operator and Redpanda's images cannot be had here, so the chart is
  installed with ``redpanda.enabled=false`` and pointed at this broker.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from support import kafka_broker
from support.docker_engine import DockerEngine

KAFKA_IMAGE = "rtvi-kafka:node"
KAFKA_PORT = 9092
_CONTROLLER = "127.0.0.1:9093"
_DATA = "/var/lib/kafka"

# The broker advertises its pod's IP (from the downward API), so clients anywhere on the
# node (pods, and the test on the host through the bridge) follow it after bootstrapping.
_ENTRYPOINT = f"""#!/bin/sh
set -eu
: "${{POD_IP:?POD_IP must come from the downward API (status.podIP)}}"
sed "s/@POD_IP@/$POD_IP/" /opt/kafka/server.properties > /tmp/server.properties
java -cp '/opt/kafka/libs/*' kafka.tools.StorageTool format -t "${{CLUSTER_ID:-rtviNodeTestCluster01}}" \\
    -c /tmp/server.properties --ignore-formatted
exec java -Xmx${{KAFKA_HEAP_MB:-384}}m {" ".join(kafka_broker.JVM_OPTIONS)} \\
    -Dlog4j2.configurationFile=/opt/kafka/log4j2.properties -cp '/opt/kafka/libs/*' kafka.Kafka /tmp/server.properties
"""

_KAFKA_DOCKERFILE = f"""ARG BASE_IMAGE
FROM ${{BASE_IMAGE}}
# The base image leaves out /usr/share/man, where Java's package links its man pages.
RUN mkdir -p /usr/share/man/man1 \\
 && apt-get update -q \\
 && apt-get install -y -q --no-install-recommends openjdk-17-jre-headless \\
 && rm -rf /var/lib/apt/lists/* \\
 && useradd --uid 10002 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin kafka \\
 && mkdir -p {_DATA} && chown 10002 {_DATA}
COPY libs /opt/kafka/libs
COPY server.properties log4j2.properties /opt/kafka/
COPY entrypoint.sh /opt/kafka/entrypoint.sh
USER 10002
EXPOSE {KAFKA_PORT}
ENTRYPOINT ["/opt/kafka/entrypoint.sh"]
"""


def build_scratch(engine: DockerEngine, binary: Path, tag: str) -> str:
    """``tag``: one static binary, ``FROM scratch``, as its entrypoint (``/<its name>``)."""
    with tempfile.TemporaryDirectory() as context:
        shutil.copy(binary, Path(context) / binary.name)
        (Path(context) / "Dockerfile").write_text(
            f'FROM scratch\nCOPY {binary.name} /{binary.name}\nENTRYPOINT ["/{binary.name}"]\n')
        engine.docker("build", "-t", tag, context)
    return tag


def build_kafka(engine: DockerEngine, base_image: str) -> str:
    settings = kafka_broker.kraft_settings(
        listeners=f"PLAINTEXT://0.0.0.0:{KAFKA_PORT}", advertised=f"PLAINTEXT://@POD_IP@:{KAFKA_PORT}",
        protocols="PLAINTEXT:PLAINTEXT", controller=_CONTROLLER, log_dir=_DATA,
    )
    with tempfile.TemporaryDirectory() as context:
        root = Path(context)
        shutil.copytree(kafka_broker.fetch_jars(), root / "libs")
        (root / "server.properties").write_text(kafka_broker.properties_text(settings))
        (root / "log4j2.properties").write_text(kafka_broker.log4j2_text())
        (root / "entrypoint.sh").write_text(_ENTRYPOINT)
        (root / "entrypoint.sh").chmod(0o755)
        (root / "Dockerfile").write_text(_KAFKA_DOCKERFILE)
        out = engine.docker("build", "--network", "host", "--build-arg", f"BASE_IMAGE={base_image}",
                            "-t", KAFKA_IMAGE, context, check=False)
        assert out.returncode == 0, out.stderr[-5000:]
    return KAFKA_IMAGE


def kafka_manifests(name: str = "kafka") -> list[dict]:
    """A one-broker Deployment (data in an emptyDir) and its ClusterIP Service ``name``."""
    labels = {"app.kubernetes.io/name": name}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "strategy": {"type": "Recreate"},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "containers": [{
                          "name": "kafka", "image": KAFKA_IMAGE, "imagePullPolicy": "Never",
                          "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                          "ports": [{"name": "kafka", "containerPort": KAFKA_PORT}],
                          "readinessProbe": {"tcpSocket": {"port": "kafka"}, "periodSeconds": 2},
                          "resources": {"requests": {"cpu": "100m", "memory": "512Mi"},
                                        "limits": {"memory": "1Gi"}},
                          "volumeMounts": [{"name": "data", "mountPath": _DATA}],
                      }],
                      "volumes": [{"name": "data", "emptyDir": {}}],
                  }}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
         "spec": {"selector": labels, "ports": [{"name": "kafka", "port": KAFKA_PORT, "targetPort": "kafka"}]}},
    ]
