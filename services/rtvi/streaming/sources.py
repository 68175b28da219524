"""Where frames come from: a synthetic pattern, a video file, a webcam, an image folder."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from rtvi.errors import BadInput

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class SourceError(BadInput):
    """A source cannot be opened or read."""


class SyntheticSource:
    """A moving test pattern: colour bars, a bouncing box and the frame number.

    Needs no files or camera, and every frame differs, so JPEG sizes and decode
    costs look like real video rather than one repeated image.
    """

    def __init__(self, width: int = 640, height: int = 480, stream: int = 0) -> None:
        self.width, self.height, self.stream = width, height, stream
        bars = np.array(
            [[192, 192, 192], [0, 192, 192], [192, 192, 0], [0, 192, 0], [192, 0, 192], [0, 0, 192], [192, 0, 0]],
            dtype=np.uint8,
        )
        columns = (np.arange(width) * len(bars) // width)
        self._background = np.broadcast_to(bars[columns], (height, width, 3)).copy()
        yy, xx = np.mgrid[0:height, 0:width]
        self._gradient = ((xx + yy) % 64).astype(np.uint8)[..., None]

    def frame(self, index: int) -> np.ndarray:
        image = self._background + self._gradient
        size = max(8, min(self.width, self.height) // 4)
        t = index + 17 * self.stream
        x = abs((t * 7) % (2 * (self.width - size)) - (self.width - size))
        y = abs((t * 5) % (2 * (self.height - size)) - (self.height - size))
        cv2.rectangle(image, (x, y), (x + size, y + size), (255, 255, 255), -1)
        cv2.putText(image, f"s{self.stream} #{index}", (8, self.height - 12), cv2.FONT_HERSHEY_SIMPLEX,
                    max(0.4, self.height / 480), (0, 0, 0), 2)
        return image

    def __iter__(self) -> Iterator[np.ndarray]:
        index = 0
        while True:
            yield self.frame(index)
            index += 1


class CaptureSource:
    """A video file (optionally looped) or a camera, through OpenCV's VideoCapture.

    Opening fails at once with one clear ``SourceError`` (OpenCV's own multi-line
    backend warnings are silenced while it tries), so a wrong path or camera index is
    reported before anything else starts.
    """

    def __init__(self, target: str | int, loop: bool = False) -> None:
        self.target, self.loop = target, loop
        if isinstance(target, str) and not Path(target).is_file():
            raise SourceError(f"video file {target!r} does not exist")
        if isinstance(target, int) and sys.platform == "linux" and not Path(f"/dev/video{target}").exists():
            raise SourceError(f"no camera {target}: /dev/video{target} does not exist")
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        try:
            self._capture = cv2.VideoCapture(target)
        finally:
            cv2.utils.logging.setLogLevel(level)
        if not self._capture.isOpened():
            kind = "camera" if isinstance(target, int) else "video file"
            raise SourceError(f"cannot open {kind} {target!r} (OpenCV could not read it)")

    def close(self) -> None:
        self._capture.release()

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            yielded = False
            while True:
                ok, image = self._capture.read()
                if ok:
                    yielded = True
                    yield image
                    continue
                if not (self.loop and yielded and isinstance(self.target, str)):
                    return
                self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                yielded = False
        finally:
            self.close()


class ImageFolderSource:
    """Every image in a folder, in name order (optionally looped)."""

    def __init__(self, folder: str, loop: bool = False) -> None:
        self.paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if Path(folder).is_dir() else []
        if not self.paths:
            raise SourceError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder!r}")
        self.loop = loop

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            for path in self.paths:
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if image is None:
                    raise SourceError(f"cannot decode image {path}")
                yield image
            if not self.loop:
                return


def check_capture(target: str | int) -> None:
    """Open and close a video file or camera: a missing one is a SourceError now, not later."""
    CaptureSource(target).close()
