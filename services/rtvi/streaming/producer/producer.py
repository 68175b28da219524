"""`rtvi produce`: capture frames, encode JPEG, publish them keyed by stream."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import cv2
import numpy as np
from confluent_kafka import KafkaError, Producer

from rtvi.errors import ExitCode, WorkFailed
from rtvi.settings import parse_size
from rtvi.streaming.frames import FrameInfo
from rtvi.streaming.kafka_config import check_broker, error_logger
from rtvi.streaming.producer.config import ProducerConfig
from rtvi.streaming.producer.sources.base import FrameSource, SourceError, frames
from rtvi.streaming.producer.sources.file import VideoFileSource
from rtvi.streaming.producer.sources.folder import ImageFolderSource
from rtvi.streaming.producer.sources.redact import NativeOutputRedactor
from rtvi.streaming.producer.sources.synthetic import SyntheticSource
from rtvi.streaming.producer.sources.url import UrlSource, configure_ffmpeg
from rtvi.streaming.producer.sources.webcam import WebcamSource

log = logging.getLogger("rtvi.produce")


def make_source(config: ProducerConfig, stream: int) -> FrameSource:
    if config.source == "synthetic":
        width, height = parse_size(config.synthetic_size)
        return SyntheticSource(width, height, stream=stream)
    if config.source == "video":
        return VideoFileSource(config.video, loop=config.loop)
    if config.source == "webcam":
        return WebcamSource(config.camera)
    if config.source == "url":
        return UrlSource(config.url, open_timeout_s=config.open_timeout_s, read_timeout_s=config.open_timeout_s)
    return ImageFolderSource(config.images, loop=config.loop)


def open_source(config: ProducerConfig, stream: int) -> Iterator[np.ndarray]:
    """Stream ``stream``'s frames, its source opened now (a SourceError says why it cannot be)."""
    source = make_source(config, stream)
    source.open()
    return frames(source)


@dataclass
class ProduceStats:
    frames: int = 0
    bytes: int = 0
    delivered: int = 0
    delivery_errors: int = 0
    rejected: int = 0
    started: float = 0.0

    def summary(self, streams: int, target_fps: float) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        target = f"{target_fps:g}/stream" if target_fps else "unpaced"
        return (
            f"rtvi produce: {self.frames} frames from {streams} stream(s), {self.bytes / 1e6:.1f} MB, "
            f"{self.frames / elapsed:.1f} fps achieved (target {target}), {self.delivered} delivered, "
            f"{self.delivery_errors} delivery errors, {self.rejected} rejected as too large, in {elapsed:.1f}s"
        )


class FrameProducer:
    def __init__(self, config: ProducerConfig) -> None:
        self.config = config
        self.stats = ProduceStats()
        # murmur2 (the Java clients' partitioner) spreads stream ids like stream-0, stream-1
        # over the partitions; librdkafka's default CRC32 sends every one of them to the
        # same partition of two, leaving the other partition, and its consumer, idle.
        self._producer = Producer(config.producer("producer", partitioner="murmur2_random",
                                                  error_cb=error_logger(log)))
        self._resize = parse_size(config.resize) if config.resize else None
        self._stopping = False

    def stop(self, *_: object) -> None:
        self._stopping = True

    def _on_delivery(self, stream_id: str, index: int, size: int, err: KafkaError | None, msg) -> None:
        if err is None:
            self.stats.delivered += 1
            return
        self.stats.delivery_errors += 1
        if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            # Under --max-frame-bytes but over the broker's (or topic's) own limit.
            log.error(
                "frame %d of %s (%d bytes) refused by the broker as too large: it is over the broker's "
                "message.max.bytes or the topic's max.message.bytes; set --max-frame-bytes below that "
                "limit, or lower --jpeg-quality or --resize", index, stream_id, size,
            )
        else:
            log.error("frame %d of %s not delivered to %s: %s", index, stream_id, msg.topic(), err)

    def _publish(self, stream_id: str, index: int, image: np.ndarray) -> None:
        capture_ns = time.time_ns()
        if self._resize:
            image = cv2.resize(image, self._resize, interpolation=cv2.INTER_AREA)
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality])
        if not ok:
            raise SourceError(f"JPEG encoding failed for frame {index} of {stream_id}")
        data = encoded.tobytes()
        if len(data) > self.config.max_frame_bytes:
            self.stats.rejected += 1
            log.error(
                "frame %d of %s is %d bytes, over the %d-byte frame limit (--max-frame-bytes); "
                "lower --jpeg-quality or --resize", index, stream_id, len(data), self.config.max_frame_bytes,
            )
            return
        height, width = image.shape[:2]
        info = FrameInfo(stream_id, index, capture_ns, "image/jpeg", width, height)
        while True:
            try:
                self._producer.produce(
                    self.config.topic, value=data, key=stream_id.encode(), headers=info.headers(),
                    on_delivery=lambda err, msg, n=len(data): self._on_delivery(stream_id, index, n, err, msg),
                )
                break
            except BufferError:  # local queue full: let deliveries drain
                self._producer.poll(0.05)
        self.stats.frames += 1
        self.stats.bytes += len(data)

    def run(self) -> int:
        cfg = self.config
        sources = {f"{cfg.stream_prefix}-{i}": open_source(cfg, i) for i in range(cfg.streams)}
        check_broker(cfg, cfg.connect_timeout_s)
        # Connect and learn the topic's partitions now, so the first frames are not
        # stamped and then held while the client connects (they would arrive stale).
        self._producer.list_topics(cfg.topic, timeout=cfg.connect_timeout_s)
        counts = dict.fromkeys(sources, 0)
        self.stats.started = time.monotonic()
        deadline = self.stats.started + cfg.duration if cfg.duration else float("inf")
        interval = 1.0 / cfg.fps if cfg.fps else 0.0
        next_tick = self.stats.started
        next_report = self.stats.started + cfg.report_interval if cfg.report_interval else float("inf")
        log.info("publishing %s frames from %d stream(s) to %s on %s",
                 cfg.source, cfg.streams, cfg.topic, cfg.bootstrap_servers)
        while sources and not self._stopping and time.monotonic() < deadline:
            for stream_id, images in list(sources.items()):
                image = next(images, None)
                if image is None:
                    del sources[stream_id]
                    continue
                self._publish(stream_id, counts[stream_id], image)
                counts[stream_id] += 1
                if cfg.max_frames and counts[stream_id] >= cfg.max_frames:
                    del sources[stream_id]
            self._producer.poll(0)
            now = time.monotonic()
            if now >= next_report:
                log.info("%s", self.stats.summary(cfg.streams, cfg.fps))
                next_report = now + cfg.report_interval
            if interval:
                next_tick += interval
                time.sleep(max(0.0, min(next_tick, deadline) - now))
        # In short slices: a callback's exception (refused credentials) surfaces only when
        # flush returns, and must not wait for the whole 30 s.
        deadline = time.monotonic() + 30
        remaining = self._producer.flush(0)
        while remaining and time.monotonic() < deadline:
            remaining = self._producer.flush(0.5)
        if remaining:
            self.stats.delivery_errors += remaining
            log.error("%d frames still undelivered after 30s flush", remaining)
        print(self.stats.summary(cfg.streams, cfg.fps), flush=True)
        if self.stats.delivery_errors or self.stats.rejected:
            raise WorkFailed(f"{self.stats.delivery_errors} frames not delivered, {self.stats.rejected} rejected as too large")
        return ExitCode.OK


def produce(config: ProducerConfig) -> ExitCode:
    """Sources are opened and the broker is asked first: a missing source (SourceError, exit 2;
    an unreachable camera, exit 4) or broker (BrokerUnreachable, exit 4) is one line before
    any frame is captured. A camera URL's credentials are masked in all output, FFmpeg's too."""
    with ExitStack() as stack:
        if config.source == "url":
            configure_ffmpeg(config.rtsp_transport, native_logs=log.isEnabledFor(logging.DEBUG))
            stack.enter_context(NativeOutputRedactor()).add(config.url)
        producer = FrameProducer(config)
        signal.signal(signal.SIGTERM, producer.stop)
        signal.signal(signal.SIGINT, producer.stop)
        return producer.run()
