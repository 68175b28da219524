"""Small in-process stand-ins for the consumer's three parts: Kafka's consumer and producer, and
the v2 inference client. They keep the contracts the loop relies on (callbacks served inside
``consume``/``poll``, offsets per partition, deliveries acknowledged on ``poll``) and nothing more;
the subprocess tests against a real broker and server prove the real parts fit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry

from rtvi.protocol.errors import InferenceError
from rtvi.protocol.types import Classification
from rtvi.streaming.consumer.config import ConsumerConfig
from rtvi.streaming.consumer.health import Health
from rtvi.streaming.consumer.loop import FrameConsumer
from rtvi.streaming.consumer.metrics import ConsumerMetrics
from rtvi.streaming.consumer.outcomes import Outcomes
from rtvi.streaming.frames import FrameInfo

TOPIC = "frames"


@dataclass
class Message:
    partition_: int
    offset_: int
    key_: bytes
    value_: bytes
    headers_: list

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def key(self) -> bytes:
        return self.key_

    def value(self) -> bytes:
        return self.value_

    def headers(self) -> list:
        return self.headers_

    def topic(self) -> str:
        return TOPIC


@dataclass
class FakeKafkaConsumer:
    """Partitions of one topic; a rebalance is queued and served inside the next ``consume``."""

    partitions: int = 2
    logs: dict[int, list[Message]] = field(default_factory=dict)
    committed: dict[int, int] = field(default_factory=dict)
    assigned: set[int] = field(default_factory=set)
    paused: set[int] = field(default_factory=set)
    positions: dict[int, int] = field(default_factory=dict)
    closed: bool = False
    _events: list[tuple[str, list[int]]] = field(default_factory=list)
    _callbacks: dict[str, Callable] = field(default_factory=dict)

    def add(self, partition: int, stream: str, frame: int, value: bytes = b"jpeg", age_ms: float = 0) -> None:
        log = self.logs.setdefault(partition, [])
        info = FrameInfo(stream, frame, time.time_ns() - int(age_ms * 1e6))
        log.append(Message(partition, len(log), stream.encode(), value, info.headers()))

    def rebalance(self, *, revoke: Sequence[int] = (), assign: Sequence[int] = ()) -> None:
        if revoke:
            self._events.append(("revoke", list(revoke)))
        if assign:
            self._events.append(("assign", list(assign)))

    # --- confluent_kafka.Consumer's methods the loop uses ---------------------------
    def subscribe(self, topics: list[str], on_assign: Callable, on_revoke: Callable) -> None:
        self._callbacks = {"assign": on_assign, "revoke": on_revoke}
        self.rebalance(assign=range(self.partitions))

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        while self._events:
            kind, partitions = self._events.pop(0)
            tps = [TopicPartition(TOPIC, p) for p in partitions]
            if kind == "assign":
                for p in partitions:
                    self.assigned.add(p)
                    self.positions[p] = self.committed.get(p, 0)
            self._callbacks[kind](self, tps)
            if kind == "revoke":
                self.assigned.difference_update(partitions)
                self.paused.difference_update(partitions)
        out: list[Message] = []
        readable = sorted(self.assigned - self.paused)
        while len(out) < num_messages:
            progressed = False
            for p in readable:
                log, position = self.logs.get(p, []), self.positions[p]
                if position < len(log) and len(out) < num_messages:
                    out.append(log[position])
                    self.positions[p] = position + 1
                    progressed = True
            if not progressed:
                break
        return out

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, p) for p in sorted(self.assigned)]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused.update(tp.partition for tp in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused.difference_update(tp.partition for tp in partitions)

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        for tp in offsets:
            self.committed[tp.partition] = tp.offset

    def close(self) -> None:
        self.closed = True


class DeliveryError:
    def __str__(self) -> str:
        return "Local: Message timed out"


@dataclass
class FakeProducer:
    """Records are acknowledged on ``poll``; ``fail_next`` deliveries fail first (and are produced again)."""

    records: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, value) of the predictions topic
    topics: dict[str, list[bytes]] = field(default_factory=dict)  # every topic's acknowledged values
    fail_next: int = 0
    held: set[str] = field(default_factory=set)  # topics whose records wait unacknowledged
    _pending: list = field(default_factory=list)

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                on_delivery: Callable | None = None) -> None:
        self._pending.append((topic, key, value, on_delivery))

    def poll(self, timeout: float = -1) -> int:
        pending, self._pending = self._pending, []
        for topic, key, value, on_delivery in pending:
            if topic in self.held:
                self._pending.append((topic, key, value, on_delivery))
            elif self.fail_next:
                self.fail_next -= 1
                on_delivery(DeliveryError(), None)
            else:
                if topic == "predictions":
                    self.records.append((key, value))
                self.topics.setdefault(topic, []).append(value)
                on_delivery(None, None)
        return len(pending)

    def flush(self, timeout: float = -1) -> int:
        self.held.clear()
        self.poll(0)
        return len(self._pending)


def top(label: str) -> list[Classification]:
    return [Classification(label=label, index=0, score=1.0)]


@dataclass
class FakeClassifier:
    """Answers ``label`` for every image (or the image's own bytes after ``b"label:"``), after ``delay``
    seconds; an image ``b"bad"`` makes the whole
    call fail with INVALID_ARGUMENT (as the server rejects a batch holding one undecodable image);
    ``errors`` are raised first, one per call (retryable ones such as UNAVAILABLE)."""

    label: str = "cat"
    delay: float = 0.0
    errors: list[InferenceError] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    gate: asyncio.Event | None = None  # when set, calls wait for it (a server that does not answer)
    ready_answer: bool = True
    closed: bool = False

    async def classify(self, images: Sequence[bytes], top_k: int = 5, timeout: float = 30.0) -> list[list[Classification]]:
        self.calls.append(len(images))
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.errors:
            raise self.errors.pop(0)
        if b"bad" in images:
            raise InferenceError("INVALID_ARGUMENT", f"image {list(images).index(b'bad')} of {len(images)}: not a JPEG")
        return [top(image[6:].decode() if image.startswith(b"label:") else self.label) for image in images]

    async def ready(self, timeout: float = 5.0) -> bool:
        return self.ready_answer

    async def close(self) -> None:
        self.closed = True


def config(**overrides) -> ConsumerConfig:
    settings = dict(bootstrap_servers="fake:9092", topic=TOPIC, predictions_topic="predictions", batch_size=4,
                    max_in_flight=2, commit_interval_s=0.01, readiness_interval_s=0.05, retry_backoff_max_s=0.05,
                    report_interval=0, metrics_port=0, shutdown_timeout_s=5)
    return ConsumerConfig(**{**settings, **overrides})


def consumer(cfg: ConsumerConfig, kafka: FakeKafkaConsumer, producer: FakeProducer,
             client: FakeClassifier) -> FrameConsumer:
    """A FrameConsumer from fakes, counting into a registry of its own."""
    return FrameConsumer(cfg, consumer=kafka, producer=producer, client=client,
                         outcomes=Outcomes(ConsumerMetrics(CollectorRegistry()), cfg.stream_label_limit),
                         health=Health(cfg.liveness_timeout_s), policy=cfg.dispatch_policy())


async def until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    """Yield to the loop until ``predicate`` holds (bounded)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)
