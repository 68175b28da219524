"""The one typed configuration of `rtvi up`."""

from __future__ import annotations

from dataclasses import dataclass

from rtvi.protocol.tls import InferenceTlsConfig
from rtvi.serving.config import ServerConfig
from rtvi.settings import require, setting, setting_of
from rtvi.streaming.consumer.config import ConsumerConfig
from rtvi.streaming.producer.config import ProducerConfig
from rtvi.view.config import ViewConfig


@dataclass(frozen=True)
class UpConfig(InferenceTlsConfig):
    """`rtvi up`'s own settings; the ones its services also have are declared there (``setting_of``,
    the v2 client's TLS settings as a base) and passed on to those services' typed configs
    (``pipeline.plan``)."""

    duration: float = setting_of(ProducerConfig, "duration", default=30.0)
    video: str = setting("", "publish this video file (looped) instead of the synthetic pattern", metavar="PATH")
    camera: int = setting(-1, "publish from this camera index instead of the synthetic pattern", metavar="ID")
    bootstrap_servers: str = setting("", "use this Kafka/Redpanda instead of starting the embedded Tansu broker")
    streams: int = setting_of(ProducerConfig, "streams", default=2)
    fps: float = setting_of(ProducerConfig, "fps", default=10.0)
    model: str = setting_of(ServerConfig, "model")
    weights: str = setting(
        "auto", "for a torchvision name: auto (pretrained if in the torch hub cache, else random with a loud "
        "warning), DEFAULT, none or a path; a model directory carries its own"
    )
    precision: str = setting_of(ServerConfig, "precision")
    # Real time by default: latency stays bounded when the machine cannot keep up, and the
    # consumer's adaptive dispatch sizes batches and calls within its upper bounds.
    max_frame_age_ms: float = setting_of(ConsumerConfig, "max_frame_age_ms", default=300.0)
    batch_size: int = setting_of(ConsumerConfig, "batch_size")
    max_in_flight: int = setting_of(ConsumerConfig, "max_in_flight")
    # Mutual TLS between its consumer and its server, with certificates of your own (as in a
    # cluster): the server's files here, the consumer's as --inference-tls-* (the base class).
    tls_cert: str = setting_of(ServerConfig, "tls_cert")
    tls_key: str = setting_of(ServerConfig, "tls_key")
    tls_client_ca: str = setting_of(ServerConfig, "tls_client_ca")
    view: bool = setting(True, "start `rtvi view`, the live web page of every stream with its predictions, "
                               "on 127.0.0.1 and print its URL")
    view_port: int = setting_of(ViewConfig, "port")
    max_p95_ms: float = setting(
        0.0, "latency bound: exit 3 when p95 capture-to-prediction exceeds this many ms; 0 sets no bound"
    )
    report_interval: float = setting(5.0, "seconds between status lines")
    work_dir: str = setting("", "where the services' logs go; empty means a new temporary folder")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.tls_cert) == bool(self.inference_tls_ca),
                "mutual TLS needs both ends: --tls-cert/--tls-key for the server and --inference-tls-ca (with "
                "--inference-tls-cert/--inference-tls-key for a client certificate) for the consumer")
        require(self.duration > 0, "duration must be > 0")
        require(self.streams >= 1, "streams must be >= 1")
        require(self.fps > 0, "fps must be > 0")
        require(not (self.video and self.camera >= 0), "choose --video or --camera, not both")
        require(self.report_interval > 0, "report interval must be > 0")
        require(self.max_frame_age_ms >= 0 and self.max_p95_ms >= 0, "max frame age and max p95 must be >= 0")
        require(self.batch_size >= 1 and self.max_in_flight >= 1, "batch size and max in flight must be >= 1")
