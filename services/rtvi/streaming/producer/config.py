"""The one typed configuration of `rtvi produce`."""

from __future__ import annotations

from dataclasses import dataclass

from rtvi.settings import parse_size, require, setting
from rtvi.streaming.kafka_config import KafkaConfig
from rtvi.streaming.producer.sources.url import UrlSettings, url_problem

SOURCES = ("synthetic", "video", "webcam", "images", "url")


@dataclass(frozen=True)
class ProducerConfig(UrlSettings, KafkaConfig):
    topic: str = setting("frames", "topic the frames are published to")
    source: str = setting("synthetic", "where frames come from", choices=SOURCES)
    video: str = setting("", "video file for --source video", metavar="PATH")
    camera: int = setting(0, "camera index for --source webcam", metavar="ID")
    images: str = setting("", "folder of images for --source images", metavar="DIR")
    url: str = setting("", "camera or stream URL for --source url: rtsp://, rtsps://, http(s):// (MJPEG, HLS); "
                       "credentials in it are never logged (prefer RTVI_URL to a flag, which `ps` shows)",
                       metavar="URL", secret=True)
    loop: bool = setting(False, "restart a video or image folder when it ends")
    synthetic_size: str = setting("640x480", "resolution of the synthetic pattern", metavar="WxH")
    fps: float = setting(15.0, "frames per second per stream; 0 publishes as fast as possible")
    duration: float = setting(0.0, "stop after this many seconds; 0 means no time limit")
    max_frames: int = setting(0, "stop after this many frames per stream; 0 means no limit")
    streams: int = setting(1, "parallel streams, each with its own stream id (and source reader)")
    stream_prefix: str = setting("stream", "stream ids are <prefix>-0, <prefix>-1, ...")
    resize: str = setting("", "resize frames to WxH before encoding; empty keeps the source size", metavar="WxH")
    jpeg_quality: int = setting(85, "JPEG quality 1-100")
    report_interval: float = setting(10.0, "seconds between progress lines; 0 disables them")
    connect_timeout_s: float = setting(2.5, "exit with an error if no broker answers within this many seconds at start")

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_url_settings()
        require(self.streams >= 1, "streams must be >= 1")
        require(self.fps >= 0, "fps must be >= 0")
        require(self.duration >= 0 and self.max_frames >= 0, "duration and max frames must be >= 0")
        require(self.connect_timeout_s > 0, "connect timeout must be > 0")
        require(1 <= self.jpeg_quality <= 100, "JPEG quality must be 1..100")
        require(self.source != "video" or bool(self.video), "--source video needs --video PATH")
        require(self.source != "images" or bool(self.images), "--source images needs --images DIR")
        require(self.source != "url" or bool(self.url), "--source url needs --url URL")
        if self.source == "url":
            problem = url_problem(self.url)
            require(problem is None, f"--url: {problem}")
        require(self.source != "webcam" or self.streams == 1, "--source webcam reads one camera: use --streams 1")
        parse_size(self.synthetic_size)
        if self.resize:
            parse_size(self.resize)
