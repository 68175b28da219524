"""Which engine serves a model fastest on this machine: timed at load, not assumed.

ONNX Runtime and OpenVINO both run an ONNX model, and which is faster depends on the
CPU, the model and its precision (on one AVX2 EPYC OpenVINO int8 served 21% more than
ONNX Runtime int8; elsewhere it is the other way round). Each loaded, warm candidate runs
the model's real input (``instances`` batches of ``max_batch_size`` at once, as the server
runs them under load) in alternating rounds within a time budget; the median round of
each decides. Alternating keeps a shared machine's drift out of the comparison.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

# Fewest rounds per engine, however long they take (a slow model still gets compared).
MIN_ROUNDS = 2


@dataclass(frozen=True)
class Trial:
    """Images/s of each candidate, and what was timed."""

    figures: dict[str, float]
    batch: int
    instances: int
    seconds: float

    @property
    def fastest(self) -> str:
        return fastest(self.figures)

    def describe(self) -> str:
        figures = ", ".join(f"{name} {rate:.1f} img/s" for name, rate in sorted(self.figures.items(), key=lambda kv: -kv[1]))
        return f"{figures} (batches of {self.batch} on {self.instances} instances, {self.seconds:.1f}s)"

    def label(self) -> str:
        """A compact, stable form for ModelConfig and metric labels: ``onnxruntime=187.3,openvino=221.0``."""
        return ",".join(f"{name}={rate:.1f}" for name, rate in sorted(self.figures.items()))


def fastest(figures: Mapping[str, float]) -> str:
    """The engine with the most images/s; a tie keeps the first listed (the preference order)."""
    return max(figures, key=lambda name: figures[name])


def time_engines(runners: Mapping[str, Callable[[np.ndarray], object]], batch: np.ndarray, instances: int,
                 budget_s: float) -> Trial:
    """Alternate rounds of ``instances`` concurrent runs of ``batch`` on each runner until ``budget_s``
    has passed and each ran MIN_ROUNDS; return the median images/s of each."""
    rates: dict[str, list[float]] = {name: [] for name in runners}
    started = time.perf_counter()
    with ThreadPoolExecutor(instances, thread_name_prefix="rtvi-trial") as pool:
        while True:
            for name, run in runners.items():
                round_started = time.perf_counter()
                for future in [pool.submit(run, batch) for _ in range(instances)]:
                    future.result()
                rates[name].append(instances * len(batch) / (time.perf_counter() - round_started))
            spent = time.perf_counter() - started
            if spent >= budget_s and min(len(r) for r in rates.values()) >= MIN_ROUNDS:
                break
    return Trial({name: statistics.median(r) for name, r in rates.items()}, len(batch), instances, spent)
