"""Every image in a folder, in name order: replaying frames saved from a camera."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from rtvi.streaming.producer.sources.base import SourceError, SourceNotFound

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class ImageFolderSource:
    """The folder's images in name order, once or (``loop``) for ever."""

    live = False

    def __init__(self, folder: str, loop: bool = False) -> None:
        self.folder, self.loop = folder, loop
        self.description = f"image folder {folder!r}"
        self.paths: list[Path] = []
        self._index = -1

    def open(self) -> None:
        folder = Path(self.folder)
        self.paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        if not self.paths:
            raise SourceNotFound(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {self.folder!r}")
        self._index = -1

    def grab(self) -> bool:
        self._index += 1
        if self._index == len(self.paths) and self.loop:
            self._index = 0
        return self._index < len(self.paths)

    def retrieve(self) -> np.ndarray:
        path = self.paths[self._index]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(f"cannot decode image {path}")
        return image

    def close(self) -> None:
        pass
