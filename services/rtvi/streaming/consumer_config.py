"""The one typed configuration of `rtvi consume`."""

from __future__ import annotations

from dataclasses import dataclass

from rtvi.protocol.tls import InferenceTlsConfig
from rtvi.settings import require, setting
from rtvi.streaming.kafka_config import KafkaConfig


@dataclass(frozen=True)
class ConsumerConfig(InferenceTlsConfig, KafkaConfig):
    topic: str = setting("frames", "topic frames are read from")
    predictions_topic: str = setting("predictions", "topic predictions and error records are published to")
    group: str = setting("rtvi-consumer", "consumer group id")
    inference_url: str = setting(
        "localhost:8001",
        "v2 gRPC address of the inference service; dns:///host:port balances round-robin over every "
        "address the name resolves to (a headless Service's pods)",
    )
    model: str = setting("resnet18", "v2 model name to call")
    top_k: int = setting(5, "classes per prediction")
    batch_size: int = setting(8, "frames per ModelInfer call (at most the server's max batch size)")
    batch_linger_ms: float = setting(5.0, "how long to wait for a batch to fill before sending it smaller")
    max_in_flight: int = setting(
        8, "ModelInfer calls outstanding at once; enough to keep every inference pod's batcher fed"
    )
    max_frame_age_ms: float = setting(
        0.0,
        "real-time mode: a frame older than this when read or when it would be sent is skipped (committed, "
        "counted as dropped), streams are served in turn and frames beyond one round of calls are shed oldest first "
        "from the longest stream; 0 is keep-all mode: every frame is predicted, in order, however late",
    )
    request_timeout_s: float = setting(30.0, "deadline of one ModelInfer call")
    retry_backoff_max_s: float = setting(5.0, "longest wait between retries while the server is unavailable")
    commit_interval_s: float = setting(1.0, "how often finished offsets are committed")
    session_timeout_ms: int = setting(45000, "consumer group session timeout")
    metrics_port: int = setting(9100, "HTTP port of /metrics (Prometheus), /livez and /readyz; 0 disables it")
    metrics_host: str = setting("0.0.0.0", "address the metrics and health endpoint binds to")
    liveness_timeout_s: float = setting(30.0, "/livez fails when the event loop has not polled Kafka for this long")
    readiness_interval_s: float = setting(
        5.0, "how often the inference service's readiness is checked for /readyz (ModelReady)"
    )
    stream_label_limit: int = setting(
        32, "streams with their own label in rtvi_consumer_stream_frames_total; later ones count as \"other\""
    )
    debug_stall_s: float = setting(
        0.0, "diagnostic: on SIGUSR1, block the event loop this many seconds (to see /livez fail); 0 ignores SIGUSR1"
    )
    report_interval: float = setting(30.0, "seconds between metrics blocks in the log (one is always printed at exit)")
    shutdown_timeout_s: float = setting(30.0, "on SIGTERM, how long in-flight work may take to finish and commit")
    max_frames: int = setting(0, "exit after this many frames are done; 0 runs until stopped (for tests and benchmarks)")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.batch_size >= 1, "batch size must be >= 1")
        require(self.max_in_flight >= 1, "max in flight must be >= 1")
        require(self.top_k >= 1, "top k must be >= 1")
        require(self.max_frame_age_ms >= 0, "max frame age must be >= 0")
        require(self.report_interval >= 0, "report interval must be >= 0")
        require(self.liveness_timeout_s > 0 and self.readiness_interval_s > 0,
                "liveness timeout and readiness interval must be > 0")
        require(self.stream_label_limit >= 0 and self.debug_stall_s >= 0,
                "stream label limit and debug stall must be >= 0")
        require(self.topic != self.predictions_topic, "frames and predictions topics must differ")

    @property
    def real_time(self) -> bool:
        return self.max_frame_age_ms > 0

    @property
    def max_buffered(self) -> int:
        """Frames held before the consumer pauses fetching."""
        return self.batch_size * self.max_in_flight * 2
