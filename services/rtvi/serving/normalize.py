"""Pixel normalization in numpy, shared by every engine (no torch needed)."""

from __future__ import annotations

import numpy as np

from rtvi.serving.modeldir import Preprocessing


class Normalizer:
    """uint8 RGB crops ``(N, H, W, 3)`` -> float32 ``(pixel / 255 - mean) / std`` in the model's layout."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        self._offset = np.asarray(preprocessing.mean, dtype=np.float32) * 255
        self._scale = 1 / (np.asarray(preprocessing.std, dtype=np.float32) * 255)
        self._nchw = preprocessing.layout == "NCHW"

    def images(self, crops: np.ndarray) -> np.ndarray:
        batch = crops.astype(np.float32)
        batch -= self._offset
        batch *= self._scale
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2)) if self._nchw else batch

    def pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Already normalized ``(N, 3, H, W)`` pixels from a client, in the model's layout.

        Always a copy: the request's buffer is read-only, and engines may write to their input.
        """
        return np.array(pixels if self._nchw else pixels.transpose(0, 2, 3, 1), dtype=np.float32, order="C")
