"""The one typed configuration of `rtvi up`."""

from __future__ import annotations

from dataclasses import dataclass

from rtvi._private.settings import require, setting
from rtvi.serving.config import PRECISIONS


@dataclass(frozen=True)
class UpConfig:
    duration: float = setting(30.0, "seconds the producer publishes frames")
    video: str = setting("", "publish this video file (looped) instead of the synthetic pattern", metavar="PATH")
    camera: int = setting(-1, "publish from this camera index instead of the synthetic pattern", metavar="ID")
    bootstrap_servers: str = setting("", "use this Kafka/Redpanda instead of starting the embedded Tansu broker")
    streams: int = setting(2, "parallel synthetic or video streams (a camera is one stream)")
    fps: float = setting(15.0, "frames per second per stream")
    model: str = setting("resnet18", "torchvision classification architecture")
    weights: str = setting(
        "auto", "auto (pretrained if in the torch hub cache, else random with a loud warning), DEFAULT, none or a path"
    )
    precision: str = setting("fp32", "inference precision (bf16 is about 2x faster on CPUs with AVX512-BF16/AMX)",
                             choices=PRECISIONS)
    max_frame_age_ms: float = setting(0.0, "drop frames older than this when behind; 0 keeps every frame")
    report_interval: float = setting(10.0, "seconds between progress lines")
    work_dir: str = setting("", "where the services' logs go; empty means a new temporary folder")

    def __post_init__(self) -> None:
        require(self.duration > 0, "duration must be > 0")
        require(self.streams >= 1, "streams must be >= 1")
        require(not (self.video and self.camera >= 0), "choose --video or --camera, not both")
        require(self.report_interval > 0, "report interval must be > 0")
