"""A moving test pattern: frames from nothing, for load tests and demos."""

from __future__ import annotations

import cv2
import numpy as np


class SyntheticSource:
    """Colour bars, a bouncing box and the frame number.

    Needs no files or camera, and every frame differs, so JPEG sizes and decode
    costs look like real video rather than one repeated image.
    """

    live = False

    def __init__(self, width: int = 640, height: int = 480, stream: int = 0) -> None:
        self.width, self.height, self.stream = width, height, stream
        self.description = f"synthetic {width}x{height} pattern #{stream}"
        bars = np.array(
            [[192, 192, 192], [0, 192, 192], [192, 192, 0], [0, 192, 0], [192, 0, 192], [0, 0, 192], [192, 0, 0]],
            dtype=np.uint8,
        )
        columns = (np.arange(width) * len(bars) // width)
        self._background = np.broadcast_to(bars[columns], (height, width, 3)).copy()
        yy, xx = np.mgrid[0:height, 0:width]
        self._gradient = ((xx + yy) % 64).astype(np.uint8)[..., None]
        self._index = -1

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

    def open(self) -> None:
        self._index = -1

    def grab(self) -> bool:
        self._index += 1
        return True

    def retrieve(self) -> np.ndarray:
        return self.frame(self._index)

    def close(self) -> None:
        pass
