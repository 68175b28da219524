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
what the next two calls take are skipped, committed and counted by reason (``scheduler``, ``dispatch``).

``FrameConsumer`` is built from parts: the Kafka consumer and producer and the inference
client are given to it (``run.consume`` builds the real ones; the in-process tests fakes),
so its revoke, pause, drain, retry and bisect paths run in a unit test in milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from confluent_kafka import KafkaError, TopicPartition

from rtvi.deadline import Deadline
from rtvi.streaming.consumer import report
from rtvi.streaming.consumer.config import ConsumerConfig
from rtvi.streaming.consumer.dispatch import Dispatch
from rtvi.streaming.consumer.events import LabelEvents, event_record
from rtvi.streaming.consumer.health import Health
from rtvi.streaming.consumer.inference import BatchInference, Classifier
from rtvi.streaming.consumer.offsets import PartitionState, Slot
from rtvi.streaming.consumer.outcomes import Outcomes
from rtvi.streaming.consumer.scheduler import FairScheduler
from rtvi.streaming.frames import FrameInfo, prediction_record
from rtvi.streaming.kafka_config import error_logger

log = logging.getLogger("rtvi.consume")

# How long the pipeline may stay full before the partitions are paused.
PAUSE_AFTER_S = 10.0
# How often streams are checked for silence (events).
SILENCE_CHECK_S = 1.0


class KafkaConsumer(Protocol):
    """What the loop uses of ``confluent_kafka.Consumer``."""

    def subscribe(self, topics: list[str], on_assign: Any = ..., on_revoke: Any = ...) -> None: ...
    def consume(self, num_messages: int = 1, timeout: float = -1) -> list: ...
    def assignment(self) -> list[TopicPartition]: ...
    def pause(self, partitions: list[TopicPartition]) -> None: ...
    def resume(self, partitions: list[TopicPartition]) -> None: ...
    def commit(self, offsets: list[TopicPartition] | None = None, asynchronous: bool = True) -> Any: ...
    def close(self) -> None: ...


class KafkaProducer(Protocol):
    """What the loop uses of ``confluent_kafka.Producer``."""

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, on_delivery: Any = None) -> None: ...
    def poll(self, timeout: float = -1) -> int: ...
    def flush(self, timeout: float = -1) -> int: ...


class FrameConsumer:
    def __init__(self, config: ConsumerConfig, *, consumer: KafkaConsumer, producer: KafkaProducer,
                 client: Classifier, outcomes: Outcomes, health: Health, policy: Dispatch) -> None:
        self.config = config
        self.outcomes = outcomes
        self.health = health
        self.policy = policy
        self.partitions: dict[int, PartitionState] = {}
        self.scheduler: FairScheduler[Slot] = FairScheduler(config.max_frame_age_ms)
        self.ready_since = 0.0
        self.in_flight: set[asyncio.Task] = set()
        self.paused = False
        self._full_since: float | None = None
        self.stopping = False
        self._to_commit: dict[int, int] = {}
        self._last_busy = time.monotonic()
        self._on_kafka_error = error_logger(log)
        self._consumer = consumer
        self._producer = producer
        self.inference = BatchInference(config, client, outcomes, health, policy, self._fail)
        self.events = LabelEvents(config.event_min_frames, config.event_min_score, config.event_silence_s) \
            if config.events_topic else None
        self._next_silence_check = 0.0
        self._streams_of: dict[int, set[str]] = {}  # partition -> streams seen there (events' state per stream)

    # --- Kafka callbacks (all on the loop thread, inside poll/consume) ---------
    def _on_assign(self, consumer, partitions) -> None:
        for tp in partitions:
            self.partitions[tp.partition] = PartitionState(tp.partition)
            self.outcomes.assigned(tp.topic, tp.partition)
        self.health.partitions = len(self.partitions)
        log.info("assigned partitions %s", sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer, partitions) -> None:
        self._commit(sync=True)
        if self.paused:
            # librdkafka keeps a partition's pause across reassignment: one paused here and
            # given back later (a lost session, a broker restart) would never be fetched again.
            consumer.resume(partitions)
        for tp in partitions:
            self.outcomes.revoked(tp.topic, tp.partition)
            if self.events is not None:
                self.events.forget(self._streams_of.pop(tp.partition, set()))
            state = self.partitions.pop(tp.partition, None)
            if state:
                state.revoked = True
        self.health.partitions = len(self.partitions)
        revoked = sorted(tp.partition for tp in partitions)
        self.scheduler.discard(lambda slot: slot.partition.revoked)
        log.info("revoked partitions %s (unfinished frames there go to their next owner)", revoked)

    def _on_delivery(self, slot: Slot | None, topic: str, stream: str, value: bytes, err: KafkaError | None) -> None:
        """A record's ack (or failure, then it is produced again). ``slot``: the frame it belongs to;
        None for a stream_silent event, which belongs to no frame."""
        if err is not None:
            self.outcomes.publish_retried()
            log.warning("record of %s for %s not delivered (%s); producing it again", topic, stream, err)
            self._produce(slot, topic, stream, value)
            return
        if slot is None:
            return
        if topic == self.config.predictions_topic and not slot.failed:
            self.outcomes.processed(stream, slot.info.age_ms())
        slot.unacked -= 1
        slot.delivered = slot.unacked == 0

    # --- pipeline --------------------------------------------------------------
    def _accept(self, msg) -> None:
        state = self.partitions.get(msg.partition())
        if state is None:  # a straggler from a revoked partition
            return
        info = FrameInfo.from_record(msg.headers(), msg.key())
        slot = state.add(msg.offset(), info, msg.value() or b"")
        self._streams_of.setdefault(state.partition, set()).add(info.stream)
        self.outcomes.consumed()
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
        self.outcomes.dropped(slot.info.stream, reason)

    def _fail(self, slot: Slot, message: str, reason: str) -> None:
        slot.failed = True
        slot.record = prediction_record(
            slot.info, model=self.config.model, error=message, source=(slot.partition.partition, slot.offset)
        )
        self.outcomes.failed(slot.info.stream, reason)
        log.warning("frame %s#%d (partition %d offset %d): %s", slot.info.stream, slot.info.frame,
                    slot.partition.partition, slot.offset, message)

    def _shed(self) -> None:
        """Real time: skip what aged past the bound while buffered, and the oldest frames
        of the longest streams beyond what the next two inference calls take.

        Under overload a frame beyond that would wait for a later call, and be replaced by
        a newer one meanwhile anyway: holding it only adds latency. Two frames per waiting
        stream are always kept, so that many slow streams are not shed below their share.
        """
        if not self.config.real_time:
            return
        for slot in self.scheduler.expire(time.time_ns()):
            self._drop(slot, "expired")
        for slot in self.scheduler.shed(self.policy.shed_bound(self.scheduler.streams)):
            self._drop(slot, "overflow")

    def _dispatch(self) -> None:
        while self.policy.send_now(len(self.scheduler), len(self.in_flight), time.monotonic() - self.ready_since,
                                   self.stopping):
            batch, expired = self.scheduler.take(self.policy.batch_size, time.time_ns())
            for slot in expired:
                self._drop(slot, "expired")
            if not batch:
                continue
            task = asyncio.get_running_loop().create_task(self.inference.infer(batch))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
            self.ready_since = time.monotonic()

    def _produce(self, slot: Slot | None, topic: str, stream: str, value: bytes) -> None:
        """Produce one record keyed by ``stream``, retrying while librdkafka's local queue is full."""
        while True:
            try:
                self._producer.produce(topic, value=value, key=stream.encode(),
                                       on_delivery=lambda err, msg: self._on_delivery(slot, topic, stream, value, err))
                return
            except BufferError:
                self._producer.poll(0.05)

    def _records(self, slot: Slot) -> list[tuple[str, bytes]]:
        """A finished frame's records: its prediction (or error record), and the events it made."""
        assert slot.record is not None
        records = [(self.config.predictions_topic, slot.record)]
        if self.events is not None and slot.top1 is not None and not slot.failed:
            label, score = slot.top1
            for event in self.events.observe(slot.info.stream, slot.info.frame, slot.info.capture_ns, label, score):
                records.append((self.config.events_topic, event_record(event, self.config.model)))
        return records

    def _publish(self) -> None:
        """Each partition's finished frames in order: prediction and events produced together, and
        the frame counts as delivered only once the broker acknowledged all of them."""
        for state in self.partitions.values():
            for slot in state.ready_to_publish():
                if slot.skip:
                    slot.delivered = True
                    continue
                records = self._records(slot)
                slot.unacked = len(records)
                for topic, value in records:
                    self._produce(slot, topic, slot.info.stream, value)
        if self.events is not None and time.monotonic() >= self._next_silence_check:
            for event in self.events.silences():
                self._produce(None, self.config.events_topic, event["stream"], event_record(event, self.config.model))
            self._next_silence_check = time.monotonic() + SILENCE_CHECK_S
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
            self.outcomes.committed(True)
            self._to_commit.clear()
        except Exception as exc:  # KafkaException: retried at the next interval
            self.outcomes.committed(False)
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
        now = time.monotonic()
        self.outcomes.holding(buffered, len(self.in_flight), now - self._last_busy if buffered else 0.0)
        self._last_busy = now
        room = self.policy.fetch_room(buffered)
        if room > 0 and not self.stopping:
            self._full_since = None
            if self.paused and buffered <= self.policy.hold_limit // 2:
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
        return bool(self.config.max_frames) and self.outcomes.finished() >= self.config.max_frames

    def _log_report(self) -> None:
        started = self.outcomes.started
        elapsed = time.monotonic() - started if started is not None else 0.0
        log.info("\n%s", report.render(report.snapshot(self.outcomes.metrics), elapsed, self.config.max_frame_age_ms))

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
                self._log_report()
                next_report = now + cfg.report_interval
            await asyncio.sleep(0 if messages else 0.002)
        if ready_check is not None:
            ready_check.cancel()
        await self._drain()
        return 0

    async def _drain(self) -> None:
        """Finish what was read, publish it, commit it, leave the group."""
        self.stopping = True
        self._fetch()
        log.info("stopping: finishing %d in-flight calls and %d buffered frames", len(self.in_flight), len(self.scheduler))
        deadline = Deadline.from_timeout(self.config.shutdown_timeout_s)
        while (self.scheduler or self.in_flight or any(s.pending for s in self.partitions.values())) \
                and not deadline.expired:
            self.health.polled()
            self._shed()
            self._dispatch()
            self._publish()
            await asyncio.sleep(0.005)
        for task in self.in_flight:
            task.cancel()
        remaining = self._producer.flush(max(1.0, deadline.remaining))
        if remaining:
            log.error("%d predictions not acknowledged before shutdown; their frames stay uncommitted", remaining)
        self._commit(sync=True)
        await self.inference.client.close()
        self._consumer.close()
        self._log_report()
