"""grpc.health.v1: readiness and liveness are separate services.

- ``""`` and ``inference.GRPCInferenceService``: READINESS. SERVING once every model is
  loaded and warm; NOT_SERVING while loading or draining (Kubernetes' startup and
  readiness probes).
- ``liveness``: LIVENESS. SERVING while the process makes progress; NOT_SERVING when
  requests wait and no batch completed for ``--liveness-timeout-s`` (a wedged model
  or device; the liveness probe then restarts the pod). It recovers by itself when a
  batch completes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

log = logging.getLogger("rtvi.serve")

READINESS_SERVICES = ("", "inference.GRPCInferenceService")
LIVENESS_SERVICE = "liveness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Health:
    def __init__(self, liveness_timeout_s: float) -> None:
        self.servicer = HealthServicer()
        self._timeout = liveness_timeout_s
        self._alive = True

    async def start(self) -> None:
        await self.set_ready(False)
        await self.servicer.set(LIVENESS_SERVICE, SERVING)

    async def set_ready(self, ready: bool) -> None:
        for service in READINESS_SERVICES:
            await self.servicer.set(service, SERVING if ready else NOT_SERVING)

    async def update_liveness(self, stalled_seconds: float) -> None:
        alive = stalled_seconds < self._timeout
        if alive == self._alive:
            return
        self._alive = alive
        await self.servicer.set(LIVENESS_SERVICE, SERVING if alive else NOT_SERVING)
        if alive:
            log.warning("liveness SERVING again: a batch completed")
        else:
            log.error("liveness NOT_SERVING: requests have waited %.0fs with no batch completing "
                      "(--liveness-timeout-s %.0f); the model or device looks wedged", stalled_seconds, self._timeout)

    async def watch(self, stalled_seconds: Callable[[], float]) -> None:
        """Re-check liveness about four times per timeout, until cancelled."""
        interval = min(1.0, self._timeout / 4)
        while True:
            await self.update_liveness(stalled_seconds())
            await asyncio.sleep(interval)

    async def shutdown(self) -> None:
        """Readiness NOT_SERVING for good; liveness stays as it is, so a probe does not
        kill the process while it drains."""
        await self.set_ready(False)
