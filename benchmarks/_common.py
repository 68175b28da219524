"""Helpers shared by the benchmarks: synthetic frames, the model-only ceiling, output."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


RESULTS = Path(__file__).resolve().parent / "results"


class ModelCeiling:
    """The model alone on ready tensors (same model, precision, batch size, threads as the
    server): what a perfect server could reach. Runs on a worker thread, like the
    server's compute thread, and measures in windows so a benchmark can interleave
    them with its own windows: on a shared, noisy machine only measurements taken
    side by side compare."""

    def __init__(self, model: str, precision: str, batch_size: int, threads: int) -> None:
        from rtvi.serving.config import ServerConfig
        from rtvi.serving.model import ImageClassifier  # first: it sets OpenMP's wait policy before torch loads

        self._pool = ThreadPoolExecutor(1)
        self.batch_size = batch_size
        config = ServerConfig(model=model, weights="none", precision=precision, threads=threads,
                              max_batch_size=batch_size)
        self._classifier = ImageClassifier(config)
        self._pool.submit(self._load).result()
        self.window(3.0)  # warm-up

    def _load(self) -> None:
        spec = self._classifier.load()
        crop = spec.geometry.crop
        self._batch = self._classifier.preprocess(np.zeros((self.batch_size, crop, crop, 3), dtype=np.uint8))

    def _run(self, seconds: float) -> float:
        images, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            self._classifier.predict(self._batch)
            images += self.batch_size
        return images / (time.perf_counter() - started)

    def window(self, seconds: float) -> float:
        """Images/s over one window of ``seconds``."""
        return self._pool.submit(self._run, seconds).result()

    def close(self) -> None:
        self._pool.shutdown()


def start_rtvi(*args: str, log: Path) -> subprocess.Popen:
    """An `rtvi` subcommand as a process, as a pod would run it, logging to ``log``."""
    return subprocess.Popen([sys.executable, "-m", "rtvi", *args], stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(f"\n{title}")
    print("-" * (width + 24))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print("-" * (width + 24))


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {**result, "machine": {"cpu_count": __import__("os").cpu_count(), "platform": platform.platform()}}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return path
