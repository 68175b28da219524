"""/livez, /readyz (JSON) and /metrics of `rtvi ingest`, served from their own thread."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from rtvi.streaming.ingest import metrics
from rtvi.streaming.ingest.health import LIVENESS_S, Health, serve_http


def get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.fixture
def endpoint():
    state = {"connected": False, "cameras": [{"name": "gate", "state": "streaming"},
                                             {"name": "dock", "state": "reconnecting"}]}
    health = Health(lambda: state["connected"], lambda: state["cameras"])
    server = serve_http(0, health, host="127.0.0.1")
    try:
        yield health, state, server.server_address[1]
    finally:
        server.shutdown()


def test_ready_means_a_broker_connection_and_the_body_lists_every_camera(endpoint):
    health, state, port = endpoint
    status, kind, body = get(port, "/readyz")
    assert (status, kind) == (503, "application/json")
    assert json.loads(body) == {"ready": False, "broker": "not connected", "states": {"streaming": 1, "reconnecting": 1},
                                "cameras": state["cameras"]}
    state["connected"] = True
    status, _, body = get(port, "/readyz")
    assert status == 200 and json.loads(body)["ready"], "a camera that is down does not make the service unready"


def test_live_while_the_supervisor_loop_turns(endpoint):
    health, _, port = endpoint
    health.turned(time.monotonic())
    assert get(port, "/livez")[0] == 200
    health.turned(time.monotonic() - LIVENESS_S - 1)
    status, _, body = get(port, "/livez")
    assert status == 503 and body.startswith("fail: supervisor loop stalled")


def test_metrics_and_unknown_paths(endpoint):
    _, _, port = endpoint
    status, kind, body = get(port, "/metrics")
    assert status == 200 and kind.startswith("text/plain") and metrics.BROKER_UP in body
    assert get(port, "/nope")[0] == 404
