"""Decompression bombs: images whose header claims huge dimensions are refused before decoding.

A 1.2 MB PNG can claim 20000x20000 pixels; decoding it allocates 1.2 GB and takes a
minute of CPU (measured before the limit: 8 of them in one request held the server for
52 s and took its RSS to 3.2 GB). `rtvi serve --max-image-pixels` (default 40 MP)
rejects such an image from its PNG IHDR / JPEG SOF header with INVALID_ARGUMENT and the
error metric reason ``too_many_pixels``.
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from conftest import InferenceServer, jpeg_bytes
from support.proc import rss_mb
from test_serve_v2 import error_count, images_input

MODEL = "resnet18"
# Bound on the server's RSS growth above idle while the bombs arrive: the requests
# themselves are 4 x 16 x 1.2 MB = 75 MB, held a few times over by gRPC and protobuf.
RSS_BOUND_MB = 300
ANSWER_WITHIN_S = 15  # generous for a loaded 2-core machine; seconds, not the minute a decode takes


def png_bomb(width: int, height: int) -> bytes:
    """A valid, all-black RGB PNG of ``width`` x ``height`` in about height*width*3/1030 bytes.

    Built without ever holding the pixels: deflate blocks ended by a full flush restart
    from an empty dictionary, so one compressed block of zero rows repeats verbatim; the
    stream ends with an empty final block and the Adler-32 of all-zero data
    (a = 1, b = length mod 65521).
    """
    rows = 40
    assert height % rows == 0
    block = bytes((1 + width * 3) * rows)  # each row: filter byte 0, then zero pixels
    deflate = zlib.compressobj(9)
    first = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)  # with the zlib header
    repeat = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    length = height * (1 + width * 3)
    idat = first + repeat * (height // rows - 1) + b"\x03\x00" + struct.pack(">I", ((length % 65521) << 16) | 1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_bomb(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF header is rewritten to claim ``width`` x ``height``."""
    data = bytearray(jpeg_bytes(64, 48))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_png_bomb_is_a_real_png():
    """The bomb decodes as a PNG (shown small): the server would really allocate it."""
    import cv2

    image = cv2.imdecode(np.frombuffer(png_bomb(640, 480), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (480, 640, 3) and image.max() == 0
    assert len(png_bomb(20000, 20000)) < 1_300_000


def test_header_sizes_are_read_and_limited():
    from rtvi.serving.preprocess import ImageDecodeError, ImageTooLargeError, checked_size

    assert checked_size(png_bomb(640, 480), 640 * 480) == (640, 480)
    assert checked_size(jpeg_bytes(320, 240), 10**6) == (320, 240)
    assert checked_size(jpeg_bomb(8000, 5000), 40_000_000) == (8000, 5000)
    for bomb in (png_bomb(20000, 20000), jpeg_bomb(20000, 20000)):
        with pytest.raises(ImageTooLargeError, match="20000x20000 pixels is over the 40000000-pixel limit"):
            checked_size(bomb, 40_000_000)
    import cv2

    for fmt in (".bmp", ".tiff", ".webp"):  # OpenCV reads them, but their headers are not checked
        encoded = cv2.imencode(fmt, np.zeros((32, 32, 3), np.uint8))[1].tobytes()
        with pytest.raises(ImageDecodeError, match="not a JPEG or PNG image"):
            checked_size(encoded, 10**6)


def test_bombs_are_refused_fast_with_bounded_memory(tmp_path):
    server = InferenceServer(tmp_path, "--max-batch-size", "16", "--instances", "1")
    try:
        server.wait_serving()
        client = triton.InferenceServerClient(server.address)
        ok = client.infer(MODEL, [images_input([jpeg_bytes()])], outputs=[triton.InferRequestedOutput("logits", class_count=1)])
        assert ok.as_numpy("logits").shape == (1, 1)
        time.sleep(1)
        idle_mb = rss_mb(server.proc.popen.pid)
        # 4 requests at once, each of 16 bombs: two all-PNG, two all-JPEG.
        requests = [[png_bomb(20000, 20000)] * 16, [jpeg_bomb(20000, 20000)] * 16] * 2
        peak = [idle_mb]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_mb(server.proc.popen.pid))
                time.sleep(0.02)

        def send(images: list[bytes]) -> tuple[float, InferenceServerException | None]:
            started = time.monotonic()
            try:
                client.infer(MODEL, [images_input(images)], client_timeout=120)
            except InferenceServerException as exc:
                return time.monotonic() - started, exc
            return time.monotonic() - started, None

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(send, requests))
        finally:
            done.set()
            sampler.join()
        growth = peak[0] - idle_mb
        seconds = max(s for s, _ in answers)
        print(f"\n4 x 16 bombs: answered within {seconds:.2f}s; RSS idle {idle_mb:.0f} MB, "
              f"peak {peak[0]:.0f} MB (+{growth:.0f} MB, bound {RSS_BOUND_MB} MB)")
        for _, error in answers:
            assert error is not None, "a bomb was classified"
            assert error.status() == "StatusCode.INVALID_ARGUMENT", error
            assert "image 0 of 16: 20000x20000 pixels is over" in error.message(), error.message()
            assert "--max-image-pixels" in error.message()
        assert seconds < ANSWER_WITHIN_S
        assert growth < RSS_BOUND_MB
        assert error_count(server, "too_many_pixels") == 4
        # and it goes on serving
        ok = client.infer(MODEL, [images_input([jpeg_bytes()])], outputs=[triton.InferRequestedOutput("logits", class_count=1)])
        assert ok.as_numpy("logits").shape == (1, 1)
        client.close()
    finally:
        assert server.proc.terminate() == 0, server.proc.output
