"""Pytest wiring of the private Docker engine: one engine and one set of images per session.

The container tests and the real Kubernetes node both run the images built from the
project's Dockerfiles; building them (torch's builder stage alone takes minutes) happens
once, on first use, and the engine stays up until the session ends. conftest imports the
fixtures from here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO
from support.docker_engine import DockerEngine, EngineUnavailable

# torch from PyPI (CUDA build) instead of the CPU index, which is unreachable here; no
# weights download offline.
_TORCH_ARGS = ("--build-arg", "TORCH_INDEX_URL=https://pypi.org/simple", "--build-arg", "WEIGHTS=none")
# name -> (Dockerfile, build args): the Dockerfiles as users build them, only build args differ.
RTVI_IMAGES = {
    "consumer": ("Dockerfile.consumer", ()),
    "inference": ("Dockerfile.inference", _TORCH_ARGS),
    # Reuses the torch image's builder stage (cached) to export the model to ONNX.
    "inference-onnx": ("Dockerfile.inference", (*_TORCH_ARGS, "--build-arg", "ENGINE=onnx")),
}


class Images:
    """rtvi's images, built on first ``get`` on the session's engine (on the Debian base)."""

    def __init__(self, engine: DockerEngine) -> None:
        self.engine = engine
        self._base: str | None = None
        self._built: dict[str, tuple[str, int]] = {}

    @property
    def base(self) -> str:
        if self._base is None:
            self._base = self.engine.build_base_image()
        return self._base

    def get(self, name: str) -> tuple[str, int]:
        """(tag, size in bytes) of image ``name`` (a key of RTVI_IMAGES)."""
        if name not in self._built:
            dockerfile, args = RTVI_IMAGES[name]
            tag = f"rtvi-{name}:test"
            started = time.monotonic()
            out = self.engine.docker("build", "--network", "host", "-f", dockerfile, "--build-arg",
                                     f"PYTHON_IMAGE={self.base}", *args, "-t", tag, ".", cwd=REPO, check=False)
            assert out.returncode == 0, out.stderr[-5000:]
            size = self.engine.image_size(tag)
            print(f"\n{tag}: {size / 1e6:.0f} MB, built in {time.monotonic() - started:.0f}s")
            self._built[name] = (tag, size)
        return self._built[name]

    def save(self, tag: str, path: Path) -> None:
        """``docker save``: the image as a tar another runtime (containerd) imports."""
        self.engine.docker("save", "-o", str(path), tag)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    engine = DockerEngine()
    try:
        engine.start()
    except EngineUnavailable as exc:
        engine.stop()
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the container tests: {exc}")
        pytest.skip(str(exc))
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def rtvi_images(docker_engine) -> Images:
    return Images(docker_engine)
