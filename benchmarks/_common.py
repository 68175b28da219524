"""Helpers shared by the benchmarks: the model-only ceiling, the machine's description, output."""

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
    """The model alone on ready tensors (same model, engine, precision, batch size and
    threads as the server): what a perfect server could reach. It runs rtvi's own engine
    on a worker thread, like the server's compute thread, and measures in windows so a
    benchmark can interleave them with its own windows: on a shared, noisy machine only
    measurements taken side by side compare."""

    def __init__(self, model: str, precision: str, batch_size: int, threads: int, engine: str = "torch",
                 weights: str = "none") -> None:
        """``model`` is a torchvision architecture or a model directory; ``precision`` the
        compute precision (``auto`` resolves as the server would)."""
        from rtvi.serving.engines import select
        from rtvi.serving.engines.base import ExecutionPlan
        from rtvi.serving.hardware import cpu_info
        from rtvi.serving.normalize import Normalizer
        from rtvi.serving.loader import resolve_source

        source = resolve_source(model, weights)
        engine_class = select.engine_class(engine)
        device = "cuda" if engine_class.cuda_available() else "cpu"
        self.precision = select.choose_precision(precision, engine, device, source.stored_precision, cpu_info()).value
        plan = ExecutionPlan(engine, device, self.precision, instances=1, threads=threads)
        self._engine = engine_class(source, plan)
        self.batch_size = batch_size
        crop = source.preprocessing.crop
        self._batch = Normalizer(source.preprocessing).images(np.zeros((batch_size, crop, crop, 3), dtype=np.uint8))
        self._pool = ThreadPoolExecutor(1)
        self._pool.submit(self._engine.load).result()
        self.window(3.0)  # warm-up

    def _run(self, seconds: float) -> float:
        images, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            self._engine.run(self._batch)
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


def machine() -> dict:
    """What the figures were measured on: CPU model and flags, usable CPUs, platform."""
    from rtvi.serving.hardware import available_cpus, cpu_info

    cpu = cpu_info()
    return {"cpu_model": cpu.model, "cpu_capability": cpu.capability, "native_bf16": cpu.native_bf16,
            "cpu_flags": sorted(cpu.flags), "cpu_count": os.cpu_count(), "usable_cpus": available_cpus(),
            "platform": platform.platform()}


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(f"\n{title}")
    print("-" * (width + 24))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print("-" * (width + 24))


def write_result(name: str, result: dict, path: Path | None = None) -> Path:
    path = path or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**result, "machine": machine()}, indent=2) + "\n")
    print(f"wrote {path}")
    return path
