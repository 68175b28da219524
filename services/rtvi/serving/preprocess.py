"""Image decoding and geometry: encoded bytes to model-sized RGB crops.

Runs in worker threads (OpenCV releases the GIL), so several requests decode in
parallel while the model computes. Normalization happens later, on the whole batch,
in `model.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Do not let OpenCV start its own thread pool per call: parallelism comes from the
# preprocess workers, and the cores are shared with torch.
cv2.setNumThreads(1)

_REDUCED_FLAGS = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


class ImageDecodeError(ValueError):
    """One image in a request could not be decoded."""


@dataclass(frozen=True)
class ImageGeometry:
    """Resize the short side to ``resize``, then centre-crop ``crop`` x ``crop``."""

    resize: int
    crop: int
    fast_decode: bool = True

    def _decode(self, data: bytes) -> np.ndarray:
        buf = np.frombuffer(data, dtype=np.uint8)
        flag = cv2.IMREAD_COLOR
        if self.fast_decode and data[:2] == b"\xff\xd8":
            # JPEG can decode at 1/2..1/8 scale almost for free; pick the smallest
            # scale whose short side still covers the crop.
            width, height = _jpeg_size(data)
            if width and height:
                short = min(width, height)
                for factor, reduced in _REDUCED_FLAGS:
                    if short // factor >= self.crop:
                        flag = reduced
                        break
        image = cv2.imdecode(buf, flag)
        if image is None:
            raise ImageDecodeError("not a decodable JPEG/PNG image (corrupt or truncated)")
        return image

    def __call__(self, data: bytes) -> np.ndarray:
        """Return an RGB uint8 array of shape (crop, crop, 3)."""
        if not data:
            raise ImageDecodeError("empty image (0 bytes)")
        image = self._decode(data)
        height, width = image.shape[:2]
        scale = self.resize / min(height, width)
        new_w, new_h = max(self.crop, round(width * scale)), max(self.crop, round(height * scale))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
        top, left = (new_h - self.crop) // 2, (new_w - self.crop) // 2
        crop = image[top : top + self.crop, left : left + self.crop]
        return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)

    def batch(self, images: list[bytes]) -> np.ndarray:
        """Decode a request's images into one (N, crop, crop, 3) array.

        Raises ImageDecodeError naming the first bad image, so the request fails
        alone and its neighbours in the batch are untouched.
        """
        out = np.empty((len(images), self.crop, self.crop, 3), dtype=np.uint8)
        for i, data in enumerate(images):
            try:
                out[i] = self(data)
            except ImageDecodeError as exc:
                raise ImageDecodeError(f"image {i} of {len(images)}: {exc}") from None
        return out


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Width and height from a JPEG's SOF marker, or (0, 0) if none is found."""
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            return 0, 0
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        i += 2 + length
    return 0, 0
