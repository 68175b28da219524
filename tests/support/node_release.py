"""An rtvi release on the real node, in a namespace of its own beside its own Kafka broker.

The node tests (plain, ingest, mutual TLS) each install the chart this way; they differ only in
what else the namespace holds (Secrets, a camera) and in the chart's values.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

from support.node_images import KAFKA_PORT, kafka_manifests

CHART = Path(__file__).resolve().parents[2] / "charts" / "rtvi"


def pods(cluster, namespace: str, selector: str) -> list[dict]:
    return cluster.get("pods", "-n", namespace, "-l", selector)["items"]


@contextmanager
def installed_release(cluster, namespace: str, release: str, topics: dict[str, int], helm_args: Sequence[str], *,
                      prepare: Callable[[], None] = lambda: None, manifests: Sequence[dict] = (),
                      deployments: Sequence[str] = ()) -> Iterator[SimpleNamespace]:
    """Create the namespace, run ``prepare`` (Secrets, say), start the broker and ``manifests`` and
    wait for their ``deployments``, create the topics, ``helm install --wait`` the chart with
    ``helm_args``; yield the broker's address as the host reaches it. Always uninstall and delete
    the namespace after, whatever failed on the way."""
    from rtvi.streaming.kafka_config import KafkaConfig, ensure_topics

    cluster.kubectl("create", "namespace", namespace)
    try:
        prepare()
        cluster.apply(kafka_manifests() + list(manifests), "-n", namespace)
        for deployment in ("kafka", *deployments):
            cluster.kubectl("-n", namespace, "rollout", "status", f"deployment/{deployment}", "--timeout=300s",
                            timeout=330)
        # The test reads and writes the broker from the host, through the node's bridge.
        kafka_ip = pods(cluster, namespace, "app.kubernetes.io/name=kafka")[0]["status"]["podIP"]
        broker = SimpleNamespace(bootstrap_servers=f"{kafka_ip}:{KAFKA_PORT}")
        ensure_topics(KafkaConfig(bootstrap_servers=broker.bootstrap_servers), topics)
        started = time.monotonic()
        cluster.helm("install", release, str(CHART), "--namespace", namespace, *helm_args,
                     "--wait", "--timeout", "15m")
        print(f"\nhelm install --wait of {release} in {namespace} on the real node: "
              f"{time.monotonic() - started:.0f} s; pods started -> Ready:")
        for pod in sorted(cluster.get("pods", "-n", namespace)["items"],
                          key=lambda p: p["status"].get("startTime", "")):
            ready = next((c["lastTransitionTime"] for c in pod["status"].get("conditions", [])
                          if c["type"] == "Ready" and c["status"] == "True"), "-")
            print(f"  {pod['metadata']['name']}: {pod['status'].get('startTime')} -> {ready}")
        yield broker
    finally:
        started = time.monotonic()
        cluster.helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "3m", check=False)
        cluster.kubectl("delete", "namespace", namespace, "--timeout=180s", check=False, timeout=200)
        print(f"\n{release} uninstalled and {namespace} deleted in {time.monotonic() - started:.0f} s")
