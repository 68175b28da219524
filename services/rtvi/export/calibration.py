"""Calibration and held-out images, prepared exactly as `rtvi serve` prepares requests.

Encoded images (a folder of JPEG/PNG files, or frames from an rtvi frames topic) go
through rtvi.serving.preprocess.ImageGeometry (the server's own decode, resize and crop)
and its Normalizer (the same mean/std normalization), so the int8 ranges are measured on the inputs the
served model will see. Every ``holdout_every``-th image is kept out of calibration and
used only for the accuracy report and the directory's check set (rtvi.serving.checkset),
which keeps them as the uint8 crops the server's normalization turns into model input.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtvi.export.config import ExportConfig
from rtvi.export.errors import ExportError
from rtvi.serving.modeldir import Preprocessing
from rtvi.serving.normalize import Normalizer
from rtvi.serving.preprocess import ImageDecodeError, ImageGeometry

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass(frozen=True)
class CalibrationSet:
    """Normalized float32 NCHW batches: ``calibration`` feeds the quantizer, ``held_out`` the report;
    ``held_out_crops`` are the held-out images before normalization (uint8 NHWC), for the check set."""

    calibration: np.ndarray
    held_out: np.ndarray
    held_out_crops: np.ndarray
    source: str


def _folder_images(folder: str, limit: int) -> Iterator[bytes]:
    root = Path(folder)
    if not root.is_dir():
        raise ExportError(f"--calibration-images {folder}: no such directory")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(paths) < 2:
        raise ExportError(f"--calibration-images {folder}: found {len(paths)} JPEG/PNG images, need at least 2")
    for path in paths[:limit]:
        yield path.read_bytes()


def _topic_frames(config: ExportConfig) -> Iterator[bytes]:
    """Up to ``calibration_frames`` records from the start of the topic (assigned, no group join or commit)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    from rtvi.streaming.kafka_config import BrokerUnreachable, error_logger

    topic = config.calibration_topic
    consumer = Consumer(config.consumer("export", "rtvi-export-calibration", error_cb=error_logger(log)))
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=10)
        except KafkaException as exc:
            raise BrokerUnreachable(f"cannot reach Kafka at {config.bootstrap_servers}: {exc.args[0].str()}") from None
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise ExportError(f"topic {topic!r} does not exist at {config.bootstrap_servers}")
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in found.partitions])
        read, deadline = 0, time.monotonic() + config.fetch_timeout_s
        while read < config.calibration_frames and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=100, timeout=0.5):
                if message.error() is None and message.value() and read < config.calibration_frames:
                    read += 1
                    yield message.value()
    finally:
        consumer.close()


def load_calibration(config: ExportConfig, preprocessing: Preprocessing) -> CalibrationSet:
    geometry = ImageGeometry(resize=preprocessing.resize, crop=preprocessing.crop)
    if config.calibration_images:
        encoded, source = _folder_images(config.calibration_images, config.calibration_frames), config.calibration_images
    else:
        encoded, source = _topic_frames(config), f"topic {config.calibration_topic}"
    crops, skipped, last_report = [], 0, time.monotonic()
    for data in encoded:
        try:
            crops.append(geometry(data))
        except ImageDecodeError:
            skipped += 1
        if time.monotonic() - last_report > 5:
            log.info("calibration: %d images read from %s", len(crops), source)
            last_report = time.monotonic()
    if skipped:
        log.warning("calibration: skipped %d undecodable images from %s", skipped, source)
    if len(crops) < 2:
        raise ExportError(f"calibration: {len(crops)} decodable images from {source}, need at least 2")
    stacked = np.stack(crops)
    batch = Normalizer(preprocessing).images(stacked)
    held = np.arange(len(batch)) % config.holdout_every == config.holdout_every - 1
    if not held.any():
        held[-1] = True
    log.info("calibration: %d images from %s (%d for calibration, %d held out for the report)",
             len(batch), source, int((~held).sum()), int(held.sum()))
    return CalibrationSet(batch[~held], batch[held], stacked[held], source)
