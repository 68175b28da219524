"""Image decoding and geometry: encoded bytes to model-sized RGB crops.

Runs in worker threads (OpenCV releases the GIL), so several requests decode in
parallel while the model computes. Normalization happens later, on the whole batch,
on the compute thread (``ServedModel.run``).
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


class ImageTooLargeError(ImageDecodeError):
    """An image's header claims more pixels than the server decodes (a decompression bomb)."""


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ImageGeometry:
    """Resize the short side to ``resize``, then centre-crop ``crop`` x ``crop``."""

    resize: int
    crop: int
    fast_decode: bool = True
    max_pixels: int = 40_000_000

    def _decode(self, data: bytes) -> np.ndarray:
        width, height = checked_size(data, self.max_pixels)
        buf = np.frombuffer(data, dtype=np.uint8)
        flag = cv2.IMREAD_COLOR
        if self.fast_decode and data[:2] == b"\xff\xd8":
            # JPEG can decode at 1/2..1/8 scale almost for free; pick the smallest
            # scale whose short side still covers the crop.
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
                raise type(exc)(f"image {i} of {len(images)}: {exc}") from None
        return out


def checked_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    """Width and height read from the image's header, before anything is decoded.

    OpenCV allocates the full decoded image from the header's dimensions, so a 1 MB
    PNG that claims 20000x20000 pixels costs 1.2 GB and a minute of CPU. Only JPEG and
    PNG are accepted, because only their headers are checked here: every other format
    OpenCV reads (TIFF, WebP, BMP, ...) could carry the same bomb.
    """
    if data[:8] == _PNG_SIGNATURE:
        # The first chunk must be IHDR: length 13, then width and height (big-endian).
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageDecodeError("not a decodable PNG image (no IHDR header)")
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    elif data[:2] == b"\xff\xd8":
        width, height = _jpeg_size(data)
    else:
        raise ImageDecodeError("not a JPEG or PNG image (the only formats accepted)")
    if not width or not height:
        raise ImageDecodeError("not a decodable JPEG/PNG image (no dimensions in its header)")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{width}x{height} pixels is over the {max_pixels}-pixel limit (--max-image-pixels); not decoded"
        )
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Width and height from a JPEG's first SOF marker, or (0, 0) if none is found.

    Walks the marker segments as libjpeg does: fill bytes (0xFF) and stray bytes
    between segments are skipped, markers without a length (RSTn, TEM) are stepped over.
    """
    i, n = 2, len(data)
    while i + 1 < n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or entropy-coded data before any SOF
            return 0, 0
        if i + 4 > n:
            return 0, 0
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                return 0, 0
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        if length < 2:
            return 0, 0
        i += 2 + length
    return 0, 0
