"""A camera attached to this machine (V4L2 on Linux), by index."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2

from rtvi.streaming.producer.sources.base import SourceError, SourceNotFound
from rtvi.streaming.producer.sources.capture import CaptureSource, quiet_opencv


class WebcamSource(CaptureSource):
    live = True

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index
        self.description = f"camera {index}"

    def _open_capture(self) -> cv2.VideoCapture:
        if sys.platform == "linux" and not Path(f"/dev/video{self.index}").exists():
            raise SourceNotFound(f"no camera {self.index}: /dev/video{self.index} does not exist")
        with quiet_opencv():
            return cv2.VideoCapture(self.index)

    def _open_failed(self, seconds: float) -> SourceError:
        return SourceNotFound(f"cannot open camera {self.index} (OpenCV could not read it)")
