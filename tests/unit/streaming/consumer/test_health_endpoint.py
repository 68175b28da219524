"""/livez, /readyz and /metrics served from a thread, judged from the loop's state."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from rtvi.streaming.consumer.health import Health, serve_http
from prometheus_client import CollectorRegistry

from rtvi.streaming.consumer.metrics import ConsumerMetrics, StreamLabels


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def endpoint():
    health = Health(liveness_timeout_s=0.3)
    server = serve_http("127.0.0.1", 0, health, ConsumerMetrics(CollectorRegistry()).registry)
    try:
        yield health, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_livez_fails_once_the_loop_stops_polling(endpoint):
    health, port = endpoint
    health.polled()
    assert _get(port, "/livez")[0] == 200
    time.sleep(0.5)
    status, body = _get(port, "/livez")
    assert status == 503 and "no poll for" in body
    health.polled()
    assert _get(port, "/livez")[0] == 200


def test_readyz_needs_partitions_and_a_reachable_inference_service(endpoint):
    health, port = endpoint
    assert _get(port, "/readyz") == (503, "fail: no partitions assigned\n")
    health.partitions = 2
    status, body = _get(port, "/readyz")
    assert status == 503 and "inference service" in body
    health.inference_reachable = True
    assert _get(port, "/readyz")[0] == 200


def test_metrics_and_unknown_paths(endpoint):
    _, port = endpoint
    status, body = _get(port, "/metrics")
    assert status == 200 and "rtvi_consumer_frames_processed_total" in body
    assert _get(port, "/nope")[0] == 404


def test_stream_labels_are_bounded():
    labels = StreamLabels(limit=2)
    assert [labels(s) for s in ("a", "b", "c", "a", "other", "d")] == ["a", "b", "other", "a", "other", "other"]
    assert StreamLabels(limit=0)("a") == "other"
