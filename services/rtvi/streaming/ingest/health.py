"""`rtvi ingest`'s liveness and readiness, served with its metrics on one port.

* ``GET /livez``: the supervisor loop turned within ``LIVENESS_S``. Readers run on threads
  of their own, so a camera whose read blocks never makes the service look dead; only a
  stuck supervisor does, and only a restart helps that.
* ``GET /readyz``: the Kafka client holds a connection to a broker. The body (JSON) lists
  every camera's state, last error and retry delay: cameras that are down do not make the
  service unready (it is doing its job: retrying them), they are reported.
* ``GET /metrics``: Prometheus.

The endpoint (``streaming.health_endpoint``) runs on its own thread, so it answers while the
supervisor is busy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY

from rtvi.streaming.health_endpoint import check_route, metrics_route, serve_routes

LIVENESS_S = 30.0


class Health:
    """Written by the supervisor loop, read by the HTTP thread."""

    def __init__(self, broker_connected: Callable[[], bool], cameras: Callable[[], list[dict[str, Any]]]) -> None:
        self._broker_connected = broker_connected
        self._cameras = cameras
        self.last_turn = time.monotonic()

    def turned(self, now: float) -> None:
        self.last_turn = now

    def live(self) -> tuple[bool, str]:
        idle = time.monotonic() - self.last_turn
        if idle > LIVENESS_S:
            return False, f"supervisor loop stalled: no turn for {idle:.0f} s"
        return True, "supervisor loop running"

    def ready(self) -> tuple[bool, dict[str, Any]]:
        connected = self._broker_connected()
        cameras = self._cameras()
        states: dict[str, int] = {}
        for camera in cameras:
            states[camera["state"]] = states.get(camera["state"], 0) + 1
        return connected, {"ready": connected, "broker": "connected" if connected else "not connected",
                           "states": states, "cameras": cameras}


def serve_http(port: int, health: Health, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start /metrics, /livez and /readyz on a daemon thread."""

    def readyz() -> tuple[int, str, bytes]:
        ok, body = health.ready()
        return (200 if ok else 503), "application/json", (json.dumps(body, indent=1) + "\n").encode()

    routes = {"/metrics": metrics_route(REGISTRY), "/livez": check_route(health.live), "/readyz": readyz}
    return serve_routes(host, port, routes, "rtvi-ingest-http")
