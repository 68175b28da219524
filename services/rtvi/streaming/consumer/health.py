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
import time
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry

from rtvi.streaming.health_endpoint import check_route, metrics_route, serve_routes

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


def serve_http(host: str, port: int, health: Health, registry: CollectorRegistry) -> ThreadingHTTPServer:
    """Start the metrics (of ``registry``) and health endpoint on a daemon thread."""
    routes = {"/metrics": metrics_route(registry), "/livez": check_route(health.live),
              "/readyz": check_route(health.ready)}
    return serve_routes(host, port, routes, "rtvi-http")
