"""The one typed configuration of `rtvi consume`."""

from __future__ import annotations

from dataclasses import dataclass

from rtvi.protocol.tls import InferenceTlsConfig
from rtvi.settings import require, setting
from rtvi.streaming.consumer.dispatch import AdaptiveDispatch, Dispatch, FixedDispatch
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
    batch_size: int = setting(
        8, "frames per ModelInfer call (at most the server's max batch size); with --dispatch adaptive, the most")
    batch_linger_ms: float = setting(5.0, "how long to wait for a batch to fill before sending it smaller")
    max_in_flight: int = setting(
        8, "ModelInfer calls outstanding at once, enough to keep every inference pod's batcher fed; with "
        "--dispatch adaptive, the most"
    )
    dispatch: str = setting(
        "adaptive",
        "real time only: adaptive keeps in flight the fewest frames that still get (nearly) the most predictions "
        "per second, learnt from the delivery rate it measures, within --batch-size and --max-in-flight and with "
        "the round trip within twice --max-frame-age-ms; fixed always uses the flags (keep-all mode always does)",
        choices=("adaptive", "fixed"),
    )
    max_frame_age_ms: float = setting(
        0.0,
        "real-time mode: a frame older than this when read or when it would be sent is skipped (committed, "
        "counted as dropped), streams are served in turn and frames beyond one round of calls are shed oldest first "
        "from the longest stream; 0 is keep-all mode: every frame is predicted, in order, however late",
    )
    events_topic: str = setting(
        "", "publish label-change events (and stream silent/resumed) to this topic, keyed by stream; empty: off")
    event_min_frames: int = setting(3, "a new top-1 label makes an event once it held for this many predictions in a row")
    event_min_score: float = setting(
        float("-inf"), "predictions scoring below this (the record's top-1 score: logits for torchvision models) "
        "count for no label, so they never make an event")
    event_silence_s: float = setting(10.0, "a stream without predictions for this long makes a stream_silent event")
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
        require(self.events_topic not in (self.topic, self.predictions_topic),
                "the events topic must differ from the frames and predictions topics")
        require(self.event_min_frames >= 1 and self.event_silence_s > 0,
                "event min frames must be >= 1 and event silence > 0 s")

    @property
    def real_time(self) -> bool:
        return self.max_frame_age_ms > 0

    def dispatch_policy(self) -> Dispatch:
        linger_s = self.batch_linger_ms / 1000
        if self.real_time and self.dispatch == "adaptive":
            return AdaptiveDispatch(self.batch_size, self.max_in_flight, linger_s, self.max_frame_age_ms / 1000)
        return FixedDispatch(self.batch_size, self.max_in_flight, linger_s, self.real_time)
