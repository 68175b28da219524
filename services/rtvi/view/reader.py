"""Reads the frames and predictions topics for `rtvi view`, on a thread of its own.

The reader assigns itself every partition of both topics at their latest offsets: it
joins no consumer group (so any number of views each see every stream, and none takes
partitions from another) and commits nothing (so the pipeline's consumers never see it).
It only fetches; the pipeline never waits for it. Partitions added later and topics
created after the view started are picked up by a periodic metadata check.

confluent-kafka's blocking ``consume`` releases the GIL, so the event loop serving the
page stays free; each batch is parsed here and handed to the loop in one call.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from rtvi.errors import RtviError
from rtvi.streaming.frames import FrameInfo
from rtvi.streaming.kafka_config import error_logger
from rtvi.view import metrics
from rtvi.view.config import ViewConfig
from rtvi.view.state import Frame, Prediction

log = logging.getLogger("rtvi.view")

# How often topic metadata is checked for new partitions (and missing topics).
METADATA_INTERVAL_S = 10.0
MISSING_RETRY_S = 2.0
# A consume call waits this long for a batch: five wakeups a second when idle.
POLL_S = 0.1

Record = Frame | Prediction


class TopicReader:
    """``start()`` a thread that hands lists of Frame/Prediction to ``deliver`` on ``loop``."""

    def __init__(self, config: ViewConfig, deliver: Callable[[list[Record]], None], loop: asyncio.AbstractEventLoop,
                 on_fatal: Callable[[], None]) -> None:
        self.config = config
        self._deliver = deliver
        self._loop = loop
        self._on_fatal = on_fatal
        self.fatal: RtviError | None = None
        self.last_poll = time.monotonic()
        self.assigned: dict[str, int] = {}  # topic -> partitions assigned
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtvi-view-reader", daemon=True)
        self._invalid_logged = 0
        self._consumer = Consumer(config.consumer(
            "view", config.group,
            **{"auto.offset.reset": "latest", "fetch.wait.max.ms": 100, "enable.partition.eof": False,
               # Prefetch at most this much: frames are only looked at, never replayed.
               "queued.max.messages.kbytes": 16384, "error_cb": error_logger(log)},
        ))

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def live(self) -> tuple[bool, str]:
        idle = time.monotonic() - self.last_poll
        if idle > self.config.liveness_timeout_s:
            return False, f"kafka reader stalled: no poll for {idle:.1f}s (limit {self.config.liveness_timeout_s:g}s)"
        return True, f"polled {idle:.1f}s ago"

    def ready(self) -> tuple[bool, str]:
        missing = [t for t in (self.config.topic, self.config.predictions_topic) if not self.assigned.get(t)]
        if missing:
            return False, f"topic(s) {', '.join(missing)} not found (yet) on {self.config.bootstrap_servers}"
        return True, ", ".join(f"{topic}: {n} partition(s)" for topic, n in self.assigned.items())

    # --- the thread --------------------------------------------------------------------------
    def _assign_new_partitions(self) -> bool:
        """Assign partitions not assigned yet, at their end; False while a topic is missing."""
        complete = True
        for topic in (self.config.topic, self.config.predictions_topic):
            described = self._consumer.list_topics(topic, timeout=5).topics.get(topic)
            if described is None or described.error is not None or not described.partitions:
                complete = False
                continue
            known = self.assigned.get(topic, 0)
            new = [TopicPartition(topic, p, OFFSET_END) for p in sorted(described.partitions) if p >= known]
            if new:
                self._consumer.incremental_assign(new)
                self.assigned[topic] = known + len(new)
                log.info("reading %s partitions %s from their latest offsets", topic, [tp.partition for tp in new])
        return complete

    def _parse(self, messages: list) -> list[Record]:
        records: list[Record] = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka: %s", err.str())
                continue
            if msg.topic() == self.config.topic:
                info = FrameInfo.from_record(msg.headers(), msg.key())
                records.append(Frame(info.stream, msg.partition(), msg.offset(), info.frame, info.content_type,
                                     msg.value() or b""))
                continue
            try:
                records.append(Prediction.from_json(msg.value() or b""))
            except ValueError as exc:
                metrics.RECORDS.labels("predictions", "invalid").inc()
                if self._invalid_logged < 10:  # a topic full of foreign records must not flood the log
                    self._invalid_logged += 1
                    log.warning("%s partition %d offset %d: %s", msg.topic(), msg.partition(), msg.offset(), exc)
        return records

    def _run(self) -> None:
        next_check = 0.0
        warned = False
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                self.last_poll = now
                if now >= next_check:
                    try:
                        complete = self._assign_new_partitions()
                    except KafkaException as exc:  # the broker is away for a while: try again
                        log.warning("kafka metadata: %s", exc.args[0].str())
                        complete = False
                    if not complete and not warned:
                        log.warning("waiting for %s", self.ready()[1])
                        warned = True
                    next_check = now + (METADATA_INTERVAL_S if complete else MISSING_RETRY_S)
                messages = self._consumer.consume(num_messages=1000, timeout=POLL_S)
                if messages:
                    records = self._parse(messages)
                    if records:
                        self._loop.call_soon_threadsafe(self._deliver, records)
        except RtviError as exc:  # refused credentials or certificate (error_logger): retrying cannot help
            self.fatal = exc
            self._loop.call_soon_threadsafe(self._on_fatal)
        except Exception as exc:  # noqa: BLE001 - anything else also ends the view, with its reason
            log.exception("kafka reader failed")
            self.fatal = RtviError(f"kafka reader failed: {exc}")
            self._loop.call_soon_threadsafe(self._on_fatal)
        finally:
            self._consumer.close()
