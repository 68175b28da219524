"""`rtvi ingest`'s liveness and readiness, served with its metrics on one port.

* ``GET /livez``: the supervisor loop turned within ``LIVENESS_S``. Readers run on threads
  of their own, so a camera whose read blocks never makes the service look dead; only a
  stuck supervisor does, and only a restart helps that.
* ``GET /readyz``: the Kafka client holds a connection to a broker. The body (JSON) lists
  every camera's state, last error and retry delay: cameras that are down do not make the
  service unready (it is doing its job: retrying them), they are reported.
* ``GET /metrics``: Prometheus.

The server runs on its own thread, so it answers while the supervisor is busy.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

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


def _routes(health: Health) -> dict[str, Callable[[], tuple[int, str, bytes]]]:
    def metrics() -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY)

    def livez() -> tuple[int, str, bytes]:
        ok, reason = health.live()
        return (200 if ok else 503), "text/plain", f"{'ok' if ok else 'fail'}: {reason}\n".encode()

    def readyz() -> tuple[int, str, bytes]:
        ok, body = health.ready()
        return (200 if ok else 503), "application/json", (json.dumps(body, indent=1) + "\n").encode()

    return {"/metrics": metrics, "/livez": livez, "/readyz": readyz}


def serve_http(port: int, health: Health, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start /metrics, /livez and /readyz on a daemon thread."""
    routes = _routes(health)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            route = routes.get(self.path.split("?", 1)[0])
            status, content_type, body = route() if route else (
                404, "text/plain", b"not found: try /metrics, /livez or /readyz\n")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: not news
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="rtvi-ingest-http", daemon=True).start()
    return server
