"""The HTTP endpoint of the streaming services (`rtvi consume`, `rtvi ingest`): /metrics, /livez
and /readyz on one port, for Prometheus and Kubernetes' HTTP probes.

It runs on a thread of its own, so it keeps answering while the service's loop is busy or
stuck: that is what lets /livez report a stalled loop instead of timing out. Each service
brings its routes: what its liveness and readiness mean is its own business.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

# A route answers (status, content type, body).
Route = Callable[[], tuple[int, str, bytes]]


def metrics_route(registry: CollectorRegistry) -> Route:
    """Prometheus' text format of ``registry``."""
    return lambda: (200, CONTENT_TYPE_LATEST, generate_latest(registry))


def check_route(check: Callable[[], tuple[bool, str]]) -> Route:
    """200 ``ok: <reason>`` or 503 ``fail: <reason>``, as a probe and a person read it."""

    def route() -> tuple[int, str, bytes]:
        ok, reason = check()
        return (200 if ok else 503), "text/plain", f"{'ok' if ok else 'fail'}: {reason}\n".encode()

    return route


def serve_routes(host: str, port: int, routes: dict[str, Route], name: str) -> ThreadingHTTPServer:
    """Answer GET ``routes`` (path -> route) on a daemon thread called ``name``."""
    missing = f"not found: try {', '.join(sorted(routes))}\n".encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            route = routes.get(self.path.split("?", 1)[0])
            status, content_type, body = route() if route else (404, "text/plain", missing)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: not news
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server
