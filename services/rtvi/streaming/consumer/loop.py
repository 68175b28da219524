"""`rtvi consume`'s event loop: poll, accept, dispatch, publish, commit, pause/resume, drain.

Delivery guarantee: at-least-once. A frame's offset is committed only after the broker
acknowledged its prediction (or error record), and only once every earlier frame of its
partition is done too (``offsets``), so a crash at any point re-reads, never skips.
Predictions of a partition are published in frame order, so each stream's predictions
keep their order even with several inference calls in flight.

All Kafka calls run on the event loop's thread (poll with timeout 0), so rebalance and
delivery callbacks never race with the pipeline's state, and the loop never blocks long
enough to be evicted from the group: when the pipeline is full the consumer pauses its
partitions instead of stopping to poll.

Two modes. Keep-all (``--max-frame-age-ms 0``): every frame is predicted, however late;
reading stops while the buffer is full. Real time: reading goes on so that every stream's
newest frames are at hand; frames too old when read, frames that aged past the bound while
buffered (judged when they would be sent) and the oldest frames of the longest stream beyond
one round of calls are skipped, committed and counted by reason (``scheduler``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from rtvi.streaming import consumer_metrics as metrics
from rtvi.streaming.consumer.health import Health, serve_http
from rtvi.streaming.consumer.inference import BatchInference
from rtvi.streaming.consumer.offsets import PartitionState, Slot
from rtvi.streaming.consumer.scheduler import FairScheduler
from rtvi.streaming.consumer_config import ConsumerConfig
from rtvi.streaming.frames import FrameInfo, prediction_record
from rtvi.streaming.kafka_config import error_logger
from rtvi.streaming.report import ConsumerReport

log = logging.getLogger("rtvi.consume")

# How long the pipeline may stay full before the partitions are paused.
PAUSE_AFTER_S = 10.0
# Real time reads on while frames are dropped; frames held behind one still in flight
# (in order, for the commit) are bounded at this many times the ready buffer.
REAL_TIME_HELD_FACTOR = 16


class FrameConsumer:
    def __init__(self, config: ConsumerConfig) -> None:
        self.config = config
        self.report = ConsumerReport(max_frame_age_ms=config.max_frame_age_ms)
        self.health = Health(config.liveness_timeout_s)
        self.partitions: dict[int, PartitionState] = {}
        self.scheduler: FairScheduler[Slot] = FairScheduler(config.max_frame_age_ms)
        self.ready_since = 0.0
        self.in_flight: set[asyncio.Task] = set()
        self.paused = False
        self._full_since: float | None = None
        self.stopping = False
        self._to_commit: dict[int, int] = {}
        self._last_busy = time.monotonic()
        self._labels = metrics.StreamLabels(config.stream_label_limit)
        self._on_kafka_error = error_logger(log)
        self._consumer = Consumer(
            config.consumer(
                "consumer", config.group,
                **{"session.timeout.ms": config.session_timeout_ms, "statistics.interval.ms": 5000,
                   "stats_cb": self._on_stats, "error_cb": self._on_kafka_error},
            )
        )
        self._producer = Producer(config.producer("predictions", error_cb=self._on_kafka_error))
        self.inference = BatchInference(config, self.report, self.health, self._fail)

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
            metrics.ASSIGNED.labels(tp.topic, str(tp.partition)).set(1)
        self.health.partitions = len(self.partitions)
        log.info("assigned partitions %s", sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer, partitions) -> None:
        self._commit(sync=True)
        if self.paused:
            # librdkafka keeps a partition's pause across reassignment: one paused here and
            # given back later (a lost session, a broker restart) would never be fetched again.
            consumer.resume(partitions)
        for tp in partitions:
            metrics.revoked(tp.topic, tp.partition)
            state = self.partitions.pop(tp.partition, None)
            if state:
                state.revoked = True
        self.health.partitions = len(self.partitions)
        revoked = sorted(tp.partition for tp in partitions)
        self.scheduler.discard(lambda slot: slot.partition.revoked)
        log.info("revoked partitions %s (unfinished frames there go to their next owner)", revoked)

    def _on_delivery(self, slot: Slot, err: KafkaError | None, msg) -> None:
        if err is not None:
            metrics.PUBLISH_RETRIES.inc()
            log.warning("prediction for %s#%d not delivered (%s); producing it again", slot.info.stream, slot.info.frame, err)
            self._produce(slot)
            return
        slot.delivered = True
        if not slot.failed:
            self.report.processed += 1
            self.report.stream(slot.info.stream).processed += 1
            metrics.PROCESSED.inc()
            metrics.count_stream(self._labels, slot.info.stream, "processed")
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
        slot = state.add(msg.offset(), info, msg.value() or b"")
        self.report.consumed += 1
        if self.report.started is None:
            self.report.started = time.monotonic()
        metrics.CONSUMED.inc()
        age = info.age_ms()
        if self.config.real_time and age is not None and age > self.config.max_frame_age_ms:
            self._drop(slot, "stale")
        elif not slot.value:
            self._fail(slot, "empty frame (0 bytes)", "empty")
        elif len(slot.value) > self.config.max_frame_bytes:
            self._fail(slot, f"frame of {len(slot.value)} bytes exceeds the {self.config.max_frame_bytes}-byte limit", "too_large")
        else:
            if not self.scheduler:
                self.ready_since = time.monotonic()
            self.scheduler.add(info.stream, slot, info.capture_ns)

    def _drop(self, slot: Slot, reason: str) -> None:
        """Skip a frame on purpose: committed in its turn, never predicted."""
        slot.skip = True
        slot.value = b""
        self.report.dropped_by_reason[reason] += 1
        self.report.stream(slot.info.stream).dropped += 1
        metrics.DROPPED.labels(reason).inc()
        metrics.count_stream(self._labels, slot.info.stream, "dropped")

    def _fail(self, slot: Slot, message: str, reason: str) -> None:
        slot.failed = True
        slot.record = prediction_record(
            slot.info, model=self.config.model, error=message, source=(slot.partition.partition, slot.offset)
        )
        self.report.failed += 1
        self.report.stream(slot.info.stream).failed += 1
        metrics.FAILED.labels(reason).inc()
        metrics.count_stream(self._labels, slot.info.stream, "failed")
        log.warning("frame %s#%d (partition %d offset %d): %s", slot.info.stream, slot.info.frame,
                    slot.partition.partition, slot.offset, message)

    def _shed(self) -> None:
        """Real time: skip what aged past the bound while buffered, and the oldest frames
        of the longest streams beyond what one round of inference calls takes.

        Under overload a frame beyond that round would wait at least one more round trip
        before it is sent, and be replaced by a newer one meanwhile anyway: holding it
        only adds latency. Two frames per waiting stream are always kept, so that many
        slow streams are not shed below their share.
        """
        cfg = self.config
        if not cfg.real_time:
            return
        for slot in self.scheduler.expire(time.time_ns()):
            self._drop(slot, "expired")
        for slot in self.scheduler.shed(max(cfg.batch_size * cfg.max_in_flight, 2 * self.scheduler.streams)):
            self._drop(slot, "overflow")

    def _dispatch(self) -> None:
        cfg = self.config
        linger_over = time.monotonic() - self.ready_since >= cfg.batch_linger_ms / 1000
        while self.scheduler and len(self.in_flight) < cfg.max_in_flight and (
            len(self.scheduler) >= cfg.batch_size or linger_over or self.stopping
        ):
            batch, expired = self.scheduler.take(cfg.batch_size, time.time_ns())
            for slot in expired:
                self._drop(slot, "expired")
            if not batch:
                continue
            task = asyncio.get_running_loop().create_task(self.inference.infer(batch))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
            self.ready_since = time.monotonic()
        metrics.IN_FLIGHT.set(len(self.in_flight))

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

        Keep-all: when the pipeline is full the consumer simply reads nothing, keeping
        librdkafka's prefetched frames. Real time: it reads on (``_shed`` bounds what is
        held), up to a far higher limit for frames held behind one still in flight. Only
        if the pipeline stays full for PAUSE_AFTER_S (the inference service is down, say)
        are the partitions paused, so that polling can go on without reading and the
        group does not evict it.
        """
        self.health.polled()
        buffered = self._buffered()
        metrics.BUFFERED.set(buffered)
        now = time.monotonic()
        if buffered:
            self.report.busy_seconds += now - self._last_busy
        self._last_busy = now
        limit = self.config.max_buffered * (REAL_TIME_HELD_FACTOR if self.config.real_time else 1)
        room = min(limit - buffered, self.config.max_buffered)
        if room > 0 and not self.stopping:
            self._full_since = None
            if self.paused and buffered <= limit // 2:
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
        log.info("consuming %s (group %s) from %s; inference at %s; predictions to %s; %s",
                 cfg.topic, cfg.group, cfg.bootstrap_servers, cfg.inference_url, cfg.predictions_topic,
                 f"real time: frames older than {cfg.max_frame_age_ms:g} ms are skipped" if cfg.real_time
                 else "keep-all: every frame is predicted")
        next_commit = time.monotonic() + cfg.commit_interval_s
        next_report = time.monotonic() + cfg.report_interval if cfg.report_interval else float("inf")
        next_ready_check = time.monotonic()
        ready_check: asyncio.Task | None = None
        while not self.stopping and not self._done():
            messages = self._fetch()
            for msg in messages:
                err = msg.error()
                if err is None:
                    self._accept(msg)
                elif err.code() != KafkaError._PARTITION_EOF:
                    self._on_kafka_error(err)
            self._shed()
            self._dispatch()
            self._publish()
            now = time.monotonic()
            if now >= next_commit:
                self._commit()
                next_commit = now + cfg.commit_interval_s
            if ready_check is not None and ready_check.done() and ready_check.exception() is not None:
                # A misconfigured TLS client (InferenceTlsError, exit 2): leave the group now, since a
                # consumer left for the interpreter's exit to close hangs it in a rebalance.
                self._consumer.close()
                raise ready_check.exception()
            if now >= next_ready_check and (ready_check is None or ready_check.done()):
                ready_check = asyncio.get_running_loop().create_task(self.inference.check_ready())
                next_ready_check = now + cfg.readiness_interval_s
            if now >= next_report:
                log.info("\n%s", self.report.render())
                next_report = now + cfg.report_interval
            await asyncio.sleep(0 if messages else 0.002)
        if ready_check is not None:
            ready_check.cancel()
        await self._drain()
        return 0

    async def _drain(self) -> None:
        """Finish what was read, publish it, commit it, leave the group."""
        cfg = self.config
        self.stopping = True
        self._fetch()
        log.info("stopping: finishing %d in-flight calls and %d buffered frames", len(self.in_flight), len(self.scheduler))
        deadline = time.monotonic() + cfg.shutdown_timeout_s
        while (self.scheduler or self.in_flight or any(s.pending for s in self.partitions.values())) \
                and time.monotonic() < deadline:
            self.health.polled()
            self._shed()
            self._dispatch()
            self._publish()
            await asyncio.sleep(0.005)
        for task in self.in_flight:
            task.cancel()
        remaining = self._producer.flush(max(1.0, deadline - time.monotonic()))
        if remaining:
            log.error("%d predictions not acknowledged before shutdown; their frames stay uncommitted", remaining)
        self._commit(sync=True)
        await self.inference.client.close()
        self._consumer.close()
        log.info("\n%s", self.report.render())


async def consume(config: ConsumerConfig) -> int:
    consumer = FrameConsumer(config)
    if config.metrics_port:
        serve_http(config.metrics_host, config.metrics_port, consumer.health)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: setattr(consumer, "stopping", True))
    if config.debug_stall_s:
        # A diagnostic, off by default: a real stall of the loop, to watch /livez fail.
        loop.add_signal_handler(signal.SIGUSR1, _stall, config.debug_stall_s)
    return await consumer.run()


def _stall(seconds: float) -> None:
    log.warning("SIGUSR1: blocking the event loop for %gs (--debug-stall-s diagnostic)", seconds)
    time.sleep(seconds)
