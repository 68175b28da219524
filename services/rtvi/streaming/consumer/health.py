"""Liveness and readiness of `rtvi consume`, served with its metrics over HTTP.

One HTTP server on the metrics port answers ``/metrics`` (Prometheus), ``/livez`` and
``/readyz``. It runs on its own thread, so it keeps answering while the event loop is
blocked; that is what lets ``/livez`` report a stalled loop instead of timing out.

* live: the loop polled Kafka within the last ``liveness_timeout_s`` seconds. A loop
  that stopped polling is stuck (a blocking call, a deadlock) and only a restart helps.
* ready: the consumer holds at least one partition and its inference service answered
  the last readiness check (or call). Not ready is not broken: a group member without
  partitions, or one whose server is restarting, waits.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("rtvi.consume")


@dataclass
class Health:
    """Written by the event loop, read by the HTTP thread (plain attribute reads and writes)."""

    liveness_timeout_s: float
    last_poll: float = field(default_factory=time.monotonic)
    partitions: int = 0
    inference_reachable: bool = False

    def polled(self) -> None:
        self.last_poll = time.monotonic()

    def live(self) -> tuple[bool, str]:
        idle = time.monotonic() - self.last_poll
        if idle > self.liveness_timeout_s:
            return False, f"event loop stalled: no poll for {idle:.1f}s (limit {self.liveness_timeout_s:g}s)"
        return True, f"polled {idle:.1f}s ago"

    def ready(self) -> tuple[bool, str]:
        if not self.partitions:
            return False, "no partitions assigned"
        if not self.inference_reachable:
            return False, "inference service not reachable or its model not ready"
        return True, f"{self.partitions} partition(s) assigned, inference service ready"


def _handler(health: Health, registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/livez", "/readyz"):
                ok, reason = health.live() if path == "/livez" else health.ready()
                self._send(200 if ok else 503, f"{'ok' if ok else 'fail'}: {reason}\n".encode(), "text/plain")
            else:
                self._send(404, b"not found: try /metrics, /livez or /readyz\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: not news
            pass

    return Handler


def serve_http(host: str, port: int, health: Health, registry: CollectorRegistry) -> ThreadingHTTPServer:
    """Start the metrics (of ``registry``) and health endpoint on a daemon thread."""
    server = ThreadingHTTPServer((host, port), _handler(health, registry))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="rtvi-http", daemon=True).start()
    return server
