"""The one typed configuration of `rtvi ingest`."""

from __future__ import annotations

from dataclasses import dataclass

from rtvi.settings import parse_size, require, setting
from rtvi.streaming.kafka_config import KafkaConfig
from rtvi.streaming.producer.sources.url import UrlSettings


@dataclass(frozen=True)
class IngestConfig(UrlSettings, KafkaConfig):
    camera: tuple[str, ...] = setting(
        (), "a camera as NAME=URL (repeat the flag for more; RTVI_CAMERA holds them separated by spaces); "
        "NAME is its Kafka key", metavar="NAME=URL", secret=True)
    cameras: str = setting("", "YAML file listing cameras (name, url, and optional fps, resize, roi; ${VAR} in a "
                           "url is the environment variable VAR); re-read on SIGHUP and when it changes",
                           metavar="FILE")
    topic: str = setting("frames", "topic the frames are published to (keyed by camera name)")
    fps: float = setting(5.0, "frames published per second by a camera that sets no fps of its own")
    resize: str = setting("", "resize published frames to WxH unless a camera sets its own; empty keeps the "
                          "camera's size", metavar="WxH")
    jpeg_quality: int = setting(85, "JPEG quality 1-100")
    stall_timeout_s: float = setting(10.0, "reconnect a camera that delivered no frame for this long (also "
                                     "FFmpeg's read timeout)")
    frozen_timeout_s: float = setting(20.0, "reconnect a camera that keeps sending the same picture for this "
                                      "long; 0 never does")
    backoff_initial_s: float = setting(0.5, "first delay before reconnecting a failed camera; it doubles with "
                                       "every failure, with +-20%% jitter")
    backoff_max_s: float = setting(10.0, "longest delay between reconnects")
    decode_threads: int = setting(1, "FFmpeg decoding threads per camera (1 keeps one thread per camera: right "
                                  "for a fleet; more lowers one high-resolution camera's latency)")
    publish_timeout_s: float = setting(5.0, "a frame not acknowledged by the broker within this many seconds "
                                       "is counted failed (a newer one takes its place)")
    metrics_port: int = setting(9101, "port for /metrics, /livez and /readyz; 0 disables them")
    reload_interval_s: float = setting(2.0, "seconds between checks of the cameras file for changes; 0 "
                                       "re-reads it on SIGHUP only")
    report_interval: float = setting(30.0, "seconds between per-camera status blocks in the log; 0 disables them")
    shutdown_timeout_s: float = setting(10.0, "on SIGTERM, wait at most this long for the broker to take the "
                                        "frames held")

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_url_settings()
        require(bool(self.camera or self.cameras), "no cameras: give --camera NAME=URL or --cameras FILE")
        require(0 < self.fps <= 120, "fps must be in (0, 120]")
        require(1 <= self.jpeg_quality <= 100, "JPEG quality must be 1..100")
        require(self.stall_timeout_s > 0, "stall timeout must be > 0")
        require(self.frozen_timeout_s >= 0, "frozen timeout must be >= 0")
        require(0 < self.backoff_initial_s <= self.backoff_max_s, "backoff must be 0 < initial <= max")
        require(self.decode_threads >= 1, "decode threads must be >= 1")
        require(self.publish_timeout_s > 0, "publish timeout must be > 0")
        require(self.reload_interval_s >= 0 and self.report_interval >= 0, "intervals must be >= 0")
        require(self.shutdown_timeout_s > 0, "shutdown timeout must be > 0")
        require(0 <= self.metrics_port <= 65535, "metrics port must be 0..65535")
        if self.resize:
            parse_size(self.resize)
