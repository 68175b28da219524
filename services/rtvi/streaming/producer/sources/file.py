"""A video file, once or looped: recorded footage replayed as if it were a camera."""

from __future__ import annotations

from pathlib import Path

import cv2

from rtvi.streaming.producer.sources.base import SourceError, SourceNotFound, SourceUnsupported
from rtvi.streaming.producer.sources.capture import CaptureSource, quiet_opencv


class VideoFileSource(CaptureSource):
    """A file OpenCV's FFmpeg reads; ``loop`` starts it again at its end."""

    def __init__(self, path: str, loop: bool = False) -> None:
        super().__init__()
        self.path, self.loop = path, loop
        self.description = f"video file {path!r}"
        self._read_any = False

    def _open_capture(self) -> cv2.VideoCapture:
        if not Path(self.path).is_file():
            raise SourceNotFound(f"video file {self.path!r} does not exist")
        with quiet_opencv():
            return cv2.VideoCapture(self.path)

    def _open_failed(self, seconds: float) -> SourceError:
        return SourceUnsupported(f"cannot open video file {self.path!r} (OpenCV could not read it)")

    def grab(self) -> bool:
        if super().grab():
            self._read_any = True
            return True
        if not (self.loop and self._read_any):
            return False
        self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self._read_any = False
        return self.grab()
