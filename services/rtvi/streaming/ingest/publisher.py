"""The Kafka side of `rtvi ingest`: one frame in flight per camera.

A camera's next frame is handed to the Kafka client only once the broker acknowledged (or
the client gave up on) its previous one. So the client's queue never holds a backlog of
old frames while the broker is slow or gone: the newest frame waits in the camera's slot
instead, replaced as newer ones come. One frame in flight per key also keeps each
camera's frames in order without the idempotent producer, whose epoch handling is not
worth its cost for frames that are fine to lose. The wire format is `rtvi produce`'s
(``streaming.frames``), keyed by camera name.
"""

from __future__ import annotations

import json
import logging
import time

from confluent_kafka import KafkaError, Producer

from rtvi.streaming.frames import FrameInfo
from rtvi.streaming.ingest import metrics
from rtvi.streaming.ingest.config import IngestConfig
from rtvi.streaming.ingest.reader import Frame
from rtvi.streaming.kafka_config import error_logger

log = logging.getLogger("rtvi.ingest")


class Publisher:
    def __init__(self, config: IngestConfig) -> None:
        self.topic = config.topic
        timeout_ms = round(config.publish_timeout_s * 1000)
        # murmur2 (the Java clients' partitioner) spreads camera names over the partitions.
        self._producer = Producer(config.producer(
            "ingest", partitioner="murmur2_random", error_cb=error_logger(log), stats_cb=self._on_stats,
            **{"enable.idempotence": False, "statistics.interval.ms": 1000, "message.timeout.ms": timeout_ms,
               "request.timeout.ms": timeout_ms, "linger.ms": 0, "socket.nagle.disable": True},
        ))
        self.broker_connected = False
        self._in_flight: set[str] = set()
        self._next_index: dict[str, int] = {}
        self._cameras: set[str] = set()  # deliveries of cameras since removed are not counted
        self._errors_seen: set[str] = set()

    def add(self, camera: str) -> None:
        self._cameras.add(camera)
        self._next_index.setdefault(camera, 0)

    def remove(self, camera: str) -> None:
        self._cameras.discard(camera)

    def idle(self, camera: str) -> bool:
        """Whether ``camera`` has no frame in flight (its next one may go)."""
        return camera not in self._in_flight

    def send(self, camera: str, frame: Frame) -> None:
        index = self._next_index[camera]
        self._next_index[camera] = index + 1
        info = FrameInfo(camera, index, frame.capture_ns, "image/jpeg", frame.width, frame.height)
        sent = time.monotonic()
        while True:
            try:
                self._producer.produce(self.topic, value=frame.data, key=camera.encode(), headers=info.headers(),
                                       on_delivery=lambda err, msg: self._delivered(camera, err, sent))
                break
            except BufferError:  # cannot happen with one frame per camera unless the fleet is huge
                self._producer.poll(0.05)
        self._in_flight.add(camera)

    def poll(self, timeout: float = 0.0) -> None:
        """Serve delivery reports and statistics (and raise KafkaSecurityError on refused credentials)."""
        self._producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        """Wait for frames in flight; how many are still undelivered."""
        return self._producer.flush(timeout)

    def _delivered(self, camera: str, err: KafkaError | None, sent: float) -> None:
        self._in_flight.discard(camera)
        if err is None:
            metrics.publish_seconds.observe(time.monotonic() - sent)
        if camera not in self._cameras:
            return
        outcome = metrics.PUBLISHED if err is None else metrics.FAILED
        metrics.frames.labels(camera, outcome).inc()
        if err is not None and err.str() not in self._errors_seen:
            self._errors_seen.add(err.str())
            hint = (": the broker's message.max.bytes or the topic's max.message.bytes is lower than "
                    "--max-frame-bytes; lower that, --jpeg-quality or resize"
                    if err.code() == KafkaError.MSG_SIZE_TOO_LARGE else "")
            log.warning("frames not delivered to %s: %s%s", self.topic, err.str(), hint)

    def _on_stats(self, stats_json: str) -> None:
        brokers = json.loads(stats_json).get("brokers", {}).values()
        connected = any(b.get("nodeid", -1) >= 0 and b.get("state") == "UP" for b in brokers)
        if connected != self.broker_connected:
            log.log(logging.INFO if connected else logging.WARNING, "kafka: %s",
                    "connected to a broker" if connected else "no broker connection")
        self.broker_connected = connected
        metrics.broker_up.set(int(connected))
