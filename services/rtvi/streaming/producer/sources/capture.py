"""The part every OpenCV-read source shares: a VideoCapture opened, grabbed, retrieved, released."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np

from rtvi.streaming.producer.sources.base import SourceError, SourceUnsupported


@contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log while it tries its backends one by one: a missing file or
    camera is one SourceError line, not a page of backend warnings. Process-wide, so only
    for sources opened on one thread (`rtvi produce`), never around concurrent readers."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


class CaptureSource:
    """A FrameSource on cv2.VideoCapture; subclasses say what to open and why opening failed."""

    description = "video capture"
    live = False

    def __init__(self) -> None:
        self._capture: cv2.VideoCapture | None = None

    def _open_capture(self) -> cv2.VideoCapture:
        raise NotImplementedError

    def _open_failed(self, seconds: float) -> SourceError:
        """The error for a capture that did not open after ``seconds``."""
        raise NotImplementedError

    def open(self) -> None:
        self.close()
        started = time.monotonic()
        capture = self._open_capture()
        if not capture.isOpened():
            capture.release()
            raise self._open_failed(time.monotonic() - started)
        self._capture = capture

    def grab(self) -> bool:
        try:
            return bool(self._capture.grab())
        except cv2.error:
            return False

    def retrieve(self) -> np.ndarray:
        ok, image = self._capture.retrieve()
        if not ok or image is None:
            raise SourceUnsupported(f"{self.description}: a frame was read but could not be decoded")
        return image

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
