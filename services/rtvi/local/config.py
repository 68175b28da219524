"""The one typed configuration of `rtvi up`."""

from __future__ import annotations

from dataclasses import dataclass

from rtvi.settings import require, setting


@dataclass(frozen=True)
class UpConfig:
    duration: float = setting(30.0, "seconds the producer publishes frames")
    video: str = setting("", "publish this video file (looped) instead of the synthetic pattern", metavar="PATH")
    camera: int = setting(-1, "publish from this camera index instead of the synthetic pattern", metavar="ID")
    bootstrap_servers: str = setting("", "use this Kafka/Redpanda instead of starting the embedded Tansu broker")
    streams: int = setting(2, "parallel synthetic or video streams (a camera is one stream)")
    fps: float = setting(10.0, "frames per second per stream")
    model: str = setting("resnet18", "torchvision classification architecture")
    weights: str = setting(
        "auto", "auto (pretrained if in the torch hub cache, else random with a loud warning), DEFAULT, none or a path"
    )
    precision: str = setting("", "inference precision passed to rtvi serve; empty keeps the server's default")
    max_frame_age_ms: float = setting(
        300.0,
        "real time: frames older than this when read or about to be sent are skipped and counted, so latency "
        "stays bounded when the machine cannot keep up; 0 keeps every frame (keep-all: latency grows instead)",
    )
    batch_size: int = setting(2, "consumer frames per inference call (small batches keep the round trip short)")
    max_in_flight: int = setting(2, "consumer inference calls outstanding (more adds queueing, not speed, on few cores)")
    max_p95_ms: float = setting(
        0.0, "latency bound: exit 3 when p95 capture-to-prediction exceeds this many ms; 0 sets no bound"
    )
    report_interval: float = setting(5.0, "seconds between status lines")
    work_dir: str = setting("", "where the services' logs go; empty means a new temporary folder")

    def __post_init__(self) -> None:
        require(self.duration > 0, "duration must be > 0")
        require(self.streams >= 1, "streams must be >= 1")
        require(self.fps > 0, "fps must be > 0")
        require(not (self.video and self.camera >= 0), "choose --video or --camera, not both")
        require(self.report_interval > 0, "report interval must be > 0")
        require(self.max_frame_age_ms >= 0 and self.max_p95_ms >= 0, "max frame age and max p95 must be >= 0")
        require(self.batch_size >= 1 and self.max_in_flight >= 1, "batch size and max in flight must be >= 1")
