"""The one typed configuration of `rtvi view`."""

from __future__ import annotations

from dataclasses import dataclass

from rtvi.settings import require, setting
from rtvi.streaming.kafka_config import KafkaConfig


@dataclass(frozen=True)
class ViewConfig(KafkaConfig):
    topic: str = setting("frames", "topic frames are read from")
    predictions_topic: str = setting("predictions", "topic predictions and error records are read from")
    group: str = setting(
        "rtvi-view",
        "group.id of the view's Kafka client; the view joins no group and commits nothing (it assigns itself "
        "every partition from the latest offsets), so it never changes what the consumers commit",
    )
    host: str = setting("127.0.0.1", "address the web page binds to (0.0.0.0 in a pod)")
    port: int = setting(8080, "HTTP port of the page, /api/streams, /livez, /readyz and /metrics")
    allowed_hosts: str = setting(
        "", "comma-separated Host names the page answers to (a reverse proxy's name, say); empty: localhost names "
        "when --host is a loopback address (no DNS rebinding), any name otherwise",
    )
    stale_after_s: float = setting(5.0, "a stream is marked stale when no prediction arrived for this many seconds")
    update_fps: float = setting(
        5.0, "most updates per second pushed to a browser per stream; newer frames replace ones not yet sent"
    )
    window_s: float = setting(10.0, "processed fps and p50/p95 latency are over the last this many seconds")
    history_s: int = setting(300, "seconds of per-second latency points kept for each stream's chart")
    frame_buffer_mb: int = setting(
        64, "frames waiting for their prediction are kept up to this many MiB (oldest evicted first); "
        "a consumer lagging further shows predictions without their image",
    )
    max_streams: int = setting(256, "streams shown; records of streams beyond this are counted and ignored")
    connect_timeout_s: float = setting(5.0, "exit with an error if no broker answers within this many seconds at start")
    liveness_timeout_s: float = setting(30.0, "/livez fails when the Kafka reader has not polled for this long")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.topic != self.predictions_topic, "frames and predictions topics must differ")
        require(0 <= self.port <= 65535, "port must be 0..65535")
        require(self.stale_after_s > 0 and self.window_s > 0, "stale after and window must be > 0")
        require(0 < self.update_fps <= 60, "update fps must be in (0, 60]")
        require(self.history_s >= 1 and self.frame_buffer_mb >= 1 and self.max_streams >= 1,
                "history, frame buffer and max streams must be >= 1")
        require(self.connect_timeout_s > 0 and self.liveness_timeout_s > 0,
                "connect and liveness timeouts must be > 0")
