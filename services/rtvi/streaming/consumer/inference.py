"""One batch of frames through the v2 inference service: retry, bisect, record.

Whatever goes wrong, every frame of a batch ends with a record: a prediction, or an
error record for a frame the server rejects. Retryable errors (server down, draining,
overloaded) are retried with backoff and never fail a frame; a batch the server rejects
is split into single frames so that only the bad frame fails.

The client is injected: anything with the ``Classifier`` methods (``rtvi.protocol.client.
InferenceClient`` in the service, a small fake in the in-process tests).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from rtvi.protocol.errors import InferenceError
from rtvi.protocol.types import Classification
from rtvi.streaming.consumer.config import ConsumerConfig
from rtvi.streaming.consumer.dispatch import Dispatch
from rtvi.streaming.consumer.health import Health
from rtvi.streaming.consumer.offsets import Slot
from rtvi.streaming.consumer.outcomes import Outcomes
from rtvi.streaming.frames import prediction_record

log = logging.getLogger("rtvi.consume")

FailFrame = Callable[[Slot, str, str], None]  # (slot, message, reason label)


class Classifier(Protocol):
    """What the consumer needs of a v2 client."""

    async def classify(self, images: Sequence[bytes], top_k: int = 5,
                       timeout: float = 30.0) -> list[list[Classification]]: ...

    async def ready(self, timeout: float = 5.0) -> bool: ...

    async def close(self) -> None: ...


class BatchInference:
    def __init__(self, config: ConsumerConfig, client: Classifier, outcomes: Outcomes, health: Health,
                 policy: Dispatch, fail: FailFrame) -> None:
        self.config = config
        self.client = client
        self.outcomes = outcomes
        self.health = health
        self.policy = policy
        self._fail = fail

    async def infer(self, batch: list[Slot]) -> None:
        """Classify a batch; whatever goes wrong, every frame ends with a record."""
        try:
            await self._classify(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a malformed answer must not stall the partition
            log.exception("inference of %d frames failed", len(batch))
            for slot in batch:
                if slot.record is None:
                    self._fail(slot, f"internal error: {exc}", "internal")

    async def check_ready(self) -> None:
        """Refresh the readiness of the inference service (for /readyz)."""
        self.health.inference_reachable = await self.client.ready(timeout=self.config.readiness_interval_s)

    async def _classify(self, batch: list[Slot]) -> None:
        cfg = self.config
        backoff = 0.1
        while True:
            if all(s.partition.revoked for s in batch):
                return
            started = time.perf_counter()
            try:
                results = await self.client.classify(
                    [s.value for s in batch], top_k=cfg.top_k, timeout=cfg.request_timeout_s
                )
                break
            except InferenceError as exc:
                if exc.retryable:
                    self.health.inference_reachable = exc.code != "UNAVAILABLE"
                    retries = self.outcomes.retried(exc.code)
                    if backoff >= cfg.retry_backoff_max_s or retries == 1:
                        log.warning("inference %s at %s: %s; retrying", exc.code, cfg.inference_url, exc.message)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, cfg.retry_backoff_max_s)
                    continue
                if len(batch) > 1:  # find the bad frame(s): the rest must still be classified
                    await asyncio.gather(*(self.infer([s]) for s in batch))
                    return
                self._fail(batch[0], str(exc), exc.code.lower())
                return
        self.health.inference_reachable = True
        seconds = time.perf_counter() - started
        self.policy.observe(len(batch), seconds, time.monotonic())
        self.outcomes.inferred(len(batch), seconds, self.policy.batch_size * self.policy.calls)
        if len(results) != len(batch):
            raise RuntimeError(f"server answered {len(results)} results for {len(batch)} frames")
        for slot, top in zip(batch, results, strict=True):
            slot.top1 = (top[0].label, top[0].score) if top else None
            slot.record = prediction_record(
                slot.info, model=cfg.model, inference_ms=seconds * 1000,
                top=[{"label": c.label, "index": c.index, "score": c.score} for c in top],
                source=(slot.partition.partition, slot.offset),
            )
