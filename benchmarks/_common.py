"""Helpers shared by the benchmarks: synthetic frames, the model-only ceiling, output."""

from __future__ import annotations

import json
import platform
import socket
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def model_ceiling(model: str, precision: str, batch_size: int, threads: int, seconds: float) -> float:
    """Images/s of the model alone on ready tensors: what a perfect server could reach."""
    from rtvi.serving.config import ServerConfig
    from rtvi.serving.model import ImageClassifier  # first: it sets OpenMP's wait policy before torch loads

    classifier = ImageClassifier(
        ServerConfig(model=model, weights="none", precision=precision, threads=threads, max_batch_size=batch_size)
    )
    spec = classifier.load()
    crop = spec.geometry.crop
    batch = classifier.preprocess(np.zeros((batch_size, crop, crop, 3), dtype=np.uint8))
    warm_until = time.perf_counter() + min(5.0, seconds / 2)
    while time.perf_counter() < warm_until:
        classifier.predict(batch)
    images, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        classifier.predict(batch)
        images += batch_size
    rate = images / (time.perf_counter() - started)
    return rate


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
