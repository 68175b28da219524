"""`rtvi consume`: frames in, v2 inference with several calls in flight, predictions out.

Delivery guarantee: at-least-once. A frame's offset is committed only after the
broker acknowledged its prediction (or error record), and only once every earlier
frame of its partition is done too, so a crash at any point re-reads, never skips.
Predictions of a partition are published in frame order, so each stream's
predictions keep their order even with several inference calls in flight.

All Kafka calls run on the event loop's thread (poll with timeout 0), so rebalance
and delivery callbacks never race with the pipeline's state, and the loop never
blocks long enough to be evicted from the group: when the pipeline is full the
consumer pauses its partitions instead of stopping to poll.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections import deque
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from prometheus_client import start_http_server

from rtvi.protocol.client import InferenceClient
from rtvi.protocol.errors import InferenceError
from rtvi.streaming import consumer_metrics as metrics
from rtvi.streaming.frames import FrameInfo, prediction_record
from rtvi.streaming.consumer_config import ConsumerConfig
from rtvi.streaming.kafka_config import error_logger
from rtvi.streaming.report import ConsumerReport

log = logging.getLogger("rtvi.consume")

# How long the pipeline may stay full before the partitions are paused.
PAUSE_AFTER_S = 10.0


@dataclass(eq=False)
class Slot:
    """One frame's way through the pipeline."""

    partition: PartitionState
    offset: int
    info: FrameInfo
    value: bytes
    record: bytes | None = None
    skip: bool = False
    failed: bool = False
    delivered: bool = False


@dataclass(eq=False)
class PartitionState:
    """Frames of one partition in offset order: published in order, committed in order."""

    partition: int
    pending: deque = field(default_factory=deque)  # not yet published
    unacked: deque = field(default_factory=deque)  # published, awaiting the broker's ack
    revoked: bool = False

    def ready_to_publish(self):
        while self.pending and (self.pending[0].record is not None or self.pending[0].skip):
            slot = self.pending.popleft()
            self.unacked.append(slot)
            yield slot

    def commit_position(self) -> int | None:
        """The offset to commit once the delivered prefix grew, else None."""
        last = None
        while self.unacked and self.unacked[0].delivered:
            last = self.unacked.popleft().offset
        return None if last is None else last + 1

    def __len__(self) -> int:
        return len(self.pending) + len(self.unacked)


class FrameConsumer:
    def __init__(self, config: ConsumerConfig) -> None:
        self.config = config
        self.report = ConsumerReport()
        self.partitions: dict[int, PartitionState] = {}
        self.ready: deque[Slot] = deque()
        self.ready_since = 0.0
        self.in_flight: set[asyncio.Task] = set()
        self.paused = False
        self._full_since: float | None = None
        self.stopping = False
        self._to_commit: dict[int, int] = {}
        self._last_busy = time.monotonic()
        self._on_kafka_error = error_logger(log)
        self._consumer = Consumer(
            config.consumer(
                "consumer", config.group,
                **{"session.timeout.ms": config.session_timeout_ms, "statistics.interval.ms": 5000,
                   "stats_cb": self._on_stats, "error_cb": self._on_kafka_error},
            )
        )
        self._producer = Producer(config.producer("predictions", error_cb=self._on_kafka_error))
        self._client = InferenceClient(config.inference_url, config.model, config.max_record_bytes * config.batch_size)

    # --- Kafka callbacks (all on the loop thread, inside poll/consume) ---------
    def _on_stats(self, stats_json: str) -> None:
        stats = json.loads(stats_json)
        for topic, data in stats.get("topics", {}).items():
            for partition, pdata in data.get("partitions", {}).items():
                lag = pdata.get("consumer_lag", -1)
                if partition != "-1" and lag >= 0:
                    metrics.LAG.labels(topic, partition).set(lag)

    def _on_assign(self, consumer, partitions) -> None:
        for tp in partitions:
            self.partitions[tp.partition] = PartitionState(tp.partition)
        log.info("assigned partitions %s", sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer, partitions) -> None:
        self._commit(sync=True)
        if self.paused:
            # librdkafka keeps a partition's pause across reassignment: one paused here and
            # given back later (a lost session, a broker restart) would never be fetched again.
            consumer.resume(partitions)
        for tp in partitions:
            state = self.partitions.pop(tp.partition, None)
            if state:
                state.revoked = True
        revoked = {tp.partition for tp in partitions}
        self.ready = deque(s for s in self.ready if s.partition.partition not in revoked)
        log.info("revoked partitions %s (unfinished frames there go to their next owner)", sorted(revoked))

    def _on_delivery(self, slot: Slot, err: KafkaError | None, msg) -> None:
        if err is not None:
            metrics.PUBLISH_RETRIES.inc()
            log.warning("prediction for %s#%d not delivered (%s); producing it again", slot.info.stream, slot.info.frame, err)
            self._produce(slot)
            return
        slot.delivered = True
        if not slot.failed:
            self.report.processed += 1
            metrics.PROCESSED.inc()
            age = slot.info.age_ms()
            if age is not None:
                self.report.latency.add(age)
                metrics.CAPTURE_TO_PREDICTION_SECONDS.observe(age / 1000)

    # --- pipeline --------------------------------------------------------------
    def _accept(self, msg) -> None:
        state = self.partitions.get(msg.partition())
        if state is None:  # a straggler from a revoked partition
            return
        info = FrameInfo.from_record(msg.headers(), msg.key())
        slot = Slot(state, msg.offset(), info, msg.value() or b"")
        state.pending.append(slot)
        self.report.consumed += 1
        if self.report.started is None:
            self.report.started = time.monotonic()
        metrics.CONSUMED.inc()
        age = info.age_ms()
        if self.config.max_frame_age_ms and age is not None and age > self.config.max_frame_age_ms:
            slot.skip = True
            self.report.dropped += 1
            metrics.DROPPED.labels("stale").inc()
        elif not slot.value:
            self._fail(slot, "empty frame (0 bytes)", "empty")
        elif len(slot.value) > self.config.max_frame_bytes:
            self._fail(slot, f"frame of {len(slot.value)} bytes exceeds the {self.config.max_frame_bytes}-byte limit", "too_large")
        else:
            if not self.ready:
                self.ready_since = time.monotonic()
            self.ready.append(slot)

    def _fail(self, slot: Slot, message: str, reason: str) -> None:
        slot.failed = True
        slot.record = prediction_record(
            slot.info, model=self.config.model, error=message, source=(slot.partition.partition, slot.offset)
        )
        self.report.failed += 1
        metrics.FAILED.labels(reason).inc()
        log.warning("frame %s#%d (partition %d offset %d): %s", slot.info.stream, slot.info.frame,
                    slot.partition.partition, slot.offset, message)

    def _dispatch(self) -> None:
        cfg = self.config
        linger_over = time.monotonic() - self.ready_since >= cfg.batch_linger_ms / 1000
        while self.ready and len(self.in_flight) < cfg.max_in_flight and (
            len(self.ready) >= cfg.batch_size or linger_over or self.stopping
        ):
            batch = [self.ready.popleft() for _ in range(min(cfg.batch_size, len(self.ready)))]
            task = asyncio.get_running_loop().create_task(self._infer(batch))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
            self.ready_since = time.monotonic()
        metrics.IN_FLIGHT.set(len(self.in_flight))

    async def _infer(self, batch: list[Slot]) -> None:
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

    async def _classify(self, batch: list[Slot]) -> None:
        cfg = self.config
        backoff = 0.1
        while True:
            if all(s.partition.revoked for s in batch):
                return
            started = time.perf_counter()
            try:
                results = await self._client.classify(
                    [s.value for s in batch], top_k=cfg.top_k, timeout=cfg.request_timeout_s
                )
                break
            except InferenceError as exc:
                if exc.retryable:
                    self.report.retries += 1
                    metrics.RETRIES.labels(exc.code).inc()
                    if backoff >= cfg.retry_backoff_max_s or self.report.retries == 1:
                        log.warning("inference %s at %s: %s; retrying", exc.code, cfg.inference_url, exc.message)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, cfg.retry_backoff_max_s)
                    continue
                if len(batch) > 1:  # find the bad frame(s): the rest must still be classified
                    await asyncio.gather(*(self._infer([s]) for s in batch))
                    return
                self._fail(batch[0], str(exc), exc.code.lower())
                return
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

    def _produce(self, slot: Slot) -> None:
        while True:
            try:
                self._producer.produce(
                    self.config.predictions_topic, value=slot.record, key=slot.info.stream.encode(),
                    on_delivery=lambda err, msg, s=slot: self._on_delivery(s, err, msg),
                )
                return
            except BufferError:
                self._producer.poll(0.05)

    def _publish(self) -> None:
        for state in self.partitions.values():
            for slot in state.ready_to_publish():
                if slot.skip:
                    slot.delivered = True
                else:
                    self._produce(slot)
        self._producer.poll(0)
        for state in self.partitions.values():
            position = state.commit_position()
            if position is not None:
                self._to_commit[state.partition] = position

    def _commit(self, sync: bool = False) -> None:
        self._publish()
        if not self._to_commit:
            return
        offsets = [TopicPartition(self.config.topic, p, o) for p, o in self._to_commit.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=not sync)
            metrics.COMMITS.labels("ok").inc()
            self._to_commit.clear()
        except Exception as exc:  # KafkaException: retried at the next interval
            metrics.COMMITS.labels("error").inc()
            log.warning("offset commit failed (will retry): %s", exc)

    def _buffered(self) -> int:
        return sum(len(s) for s in self.partitions.values())

    def _fetch(self) -> list:
        """Read as many frames as there is room for.

        When the pipeline is full the consumer simply reads nothing, keeping
        librdkafka's prefetched frames. Only if it stays full for PAUSE_AFTER_S
        (the inference service is down, say) are the partitions paused, so that
        polling can go on without reading and the group does not evict it.
        """
        buffered = self._buffered()
        metrics.BUFFERED.set(buffered)
        now = time.monotonic()
        if buffered:
            self.report.busy_seconds += now - self._last_busy
        self._last_busy = now
        room = self.config.max_buffered - buffered
        if room > 0 and not self.stopping:
            self._full_since = None
            if self.paused and buffered <= self.config.max_buffered // 2:
                self._consumer.resume(self._consumer.assignment())
                self.paused = False
            if not self.paused:
                return self._consumer.consume(num_messages=room, timeout=0)
        elif self._full_since is None:
            self._full_since = now
        if not self.paused and (self.stopping or now - self._full_since >= PAUSE_AFTER_S):
            self._consumer.pause(self._consumer.assignment())
            self.paused = True
        if self.paused:
            self._consumer.consume(num_messages=1, timeout=0)  # serves callbacks; paused: returns nothing
        return []

    def _done(self) -> bool:
        cfg = self.config
        return bool(cfg.max_frames) and self.report.processed + self.report.failed + self.report.dropped >= cfg.max_frames

    async def run(self) -> int:
        cfg = self.config
        self._consumer.subscribe([cfg.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("consuming %s (group %s) from %s; inference at %s; predictions to %s",
                 cfg.topic, cfg.group, cfg.bootstrap_servers, cfg.inference_url, cfg.predictions_topic)
        next_commit = time.monotonic() + cfg.commit_interval_s
        next_report = time.monotonic() + cfg.report_interval if cfg.report_interval else float("inf")
        while not self.stopping and not self._done():
            messages = self._fetch()
            for msg in messages:
                err = msg.error()
                if err is None:
                    self._accept(msg)
                elif err.code() != KafkaError._PARTITION_EOF:
                    self._on_kafka_error(err)
            self._dispatch()
            self._publish()
            now = time.monotonic()
            if now >= next_commit:
                self._commit()
                next_commit = now + cfg.commit_interval_s
            if now >= next_report:
                log.info("\n%s", self.report.render())
                next_report = now + cfg.report_interval
            await asyncio.sleep(0 if messages else 0.002)
        await self._drain()
        return 0

    async def _drain(self) -> None:
        """Finish what was read, publish it, commit it, leave the group."""
        cfg = self.config
        self.stopping = True
        self._fetch()
        log.info("stopping: finishing %d in-flight calls and %d buffered frames", len(self.in_flight), len(self.ready))
        deadline = time.monotonic() + cfg.shutdown_timeout_s
        while (self.ready or self.in_flight or any(s.pending for s in self.partitions.values())) and time.monotonic() < deadline:
            self._dispatch()
            self._publish()
            await asyncio.sleep(0.005)
        for task in self.in_flight:
            task.cancel()
        remaining = self._producer.flush(max(1.0, deadline - time.monotonic()))
        if remaining:
            log.error("%d predictions not acknowledged before shutdown; their frames stay uncommitted", remaining)
        self._commit(sync=True)
        await self._client.close()
        self._consumer.close()
        log.info("\n%s", self.report.render())


async def consume(config: ConsumerConfig) -> int:
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.metrics_host)
    consumer = FrameConsumer(config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: setattr(consumer, "stopping", True))
    return await consumer.run()
