"""One batch of frames through the v2 inference service: retry, bisect, record.

Whatever goes wrong, every frame of a batch ends with a record: a prediction, or an
error record for a frame the server rejects. Retryable errors (server down, draining,
overloaded) are retried with backoff and never fail a frame; a batch the server rejects
is split into single frames so that only the bad frame fails.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from rtvi.protocol.client import InferenceClient
from rtvi.protocol.errors import InferenceError
from rtvi.streaming import consumer_metrics as metrics
from rtvi.streaming.consumer.health import Health
from rtvi.streaming.consumer.offsets import Slot
from rtvi.streaming.consumer_config import ConsumerConfig
from rtvi.streaming.frames import prediction_record
from rtvi.streaming.report import ConsumerReport

log = logging.getLogger("rtvi.consume")

FailFrame = Callable[[Slot, str, str], None]  # (slot, message, reason label)


class BatchInference:
    def __init__(self, config: ConsumerConfig, report: ConsumerReport, health: Health, fail: FailFrame) -> None:
        self.config = config
        self.report = report
        self.health = health
        self._fail = fail
        self.client = InferenceClient(config.inference_url, config.model, config.max_record_bytes * config.batch_size,
                                      tls=config.inference_tls)

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
                    self.report.retries += 1
                    metrics.RETRIES.labels(exc.code).inc()
                    if backoff >= cfg.retry_backoff_max_s or self.report.retries == 1:
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
        metrics.INFERENCE_SECONDS.observe(seconds)
        metrics.BATCH_SIZE.observe(len(batch))
        self.report.inference.add(seconds * 1000)
        if len(results) != len(batch):
            raise RuntimeError(f"server answered {len(results)} results for {len(batch)} frames")
        for slot, top in zip(batch, results, strict=True):
            slot.record = prediction_record(
                slot.info, model=cfg.model, inference_ms=seconds * 1000,
                top=[{"label": c.label, "index": c.index, "score": c.score} for c in top],
                source=(slot.partition.partition, slot.offset),
            )
