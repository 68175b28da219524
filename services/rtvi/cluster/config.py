"""The typed configurations of `rtvi loadtest` and `rtvi status`."""

from __future__ import annotations

from dataclasses import dataclass

from rtvi.settings import parse_size, require, setting

OUTPUTS = ("text", "json")


@dataclass(frozen=True)
class ClusterConfig:
    release: str = setting("rtvi", "Helm release name of the rtvi chart")
    namespace: str = setting("default", "namespace of the release")
    kube_context: str = setting("", "kubeconfig context; empty uses the current one (or in-cluster config in a pod)")
    output: str = setting("text", "text for people, json for scripts", choices=OUTPUTS)
    request_timeout_s: float = setting(5.0, "timeout of each Kubernetes API call")

    def __post_init__(self) -> None:
        require(bool(self.release), "release must not be empty")
        require(bool(self.namespace), "namespace must not be empty")


@dataclass(frozen=True)
class LoadtestConfig(ClusterConfig):
    streams: int = setting(4, "parallel producer streams")
    fps: float = setting(15.0, "frames per second per stream; 0 is unpaced")
    duration: float = setting(60.0, "seconds the producer publishes")
    source: str = setting("synthetic", "frame source inside the Job", choices=("synthetic", "video", "images"))
    path: str = setting("", "video file or image folder inside the image, for --source video/images")
    synthetic_size: str = setting("640x480", "resolution of the synthetic pattern", metavar="WxH")
    jpeg_quality: int = setting(85, "JPEG quality")
    image: str = setting("", "producer image; empty uses the release's consumer image")
    bootstrap_servers: str = setting("", "broker address in the cluster; empty uses the release consumer's setting")
    topic: str = setting("", "frames topic; empty uses the release consumer's setting")
    dry_run: bool = setting(False, "print the Job manifest as YAML and exit (needs no cluster)")
    wait_timeout_s: float = setting(600.0, "longest wait for the Job to finish, on top of its duration")
    metrics_port: int = setting(9100, "consumers' metrics port")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.streams >= 1, "streams must be >= 1")
        require(self.duration > 0, "duration must be > 0")
        require(self.fps >= 0, "fps must be >= 0")
        require(self.source == "synthetic" or bool(self.path), f"--source {self.source} needs --path")
        parse_size(self.synthetic_size)


@dataclass(frozen=True)
class StatusConfig(ClusterConfig):
    metrics_port: int = setting(9100, "consumers' metrics port (for lag)")
