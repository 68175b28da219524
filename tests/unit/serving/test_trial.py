"""Timing engines against each other: the fastest wins, every candidate runs its rounds, in bounded time."""

from __future__ import annotations

import time

import numpy as np

from rtvi.serving.engines.trial import MIN_ROUNDS, Trial, fastest, time_engines


def sleeper(seconds: float, calls: list[int]):
    def run(batch: np.ndarray) -> None:
        calls.append(len(batch))
        time.sleep(seconds)
    return run


def test_fastest_and_ties_keep_the_preference_order():
    assert fastest({"onnxruntime": 90.0, "openvino": 110.0}) == "openvino"
    assert fastest({"onnxruntime": 100.0, "openvino": 100.0}) == "onnxruntime"


def test_the_faster_runner_wins_within_the_budget():
    slow_calls, fast_calls = [], []
    started = time.perf_counter()
    trial = time_engines({"slow": sleeper(0.02, slow_calls), "fast": sleeper(0.005, fast_calls)},
                         np.zeros((4, 3)), instances=2, budget_s=0.2)
    assert time.perf_counter() - started < 2
    assert trial.fastest == "fast" and trial.figures["fast"] > 2 * trial.figures["slow"]
    assert len(slow_calls) == len(fast_calls) >= 2 * MIN_ROUNDS  # alternating rounds, 2 instances each
    assert (trial.batch, trial.instances) == (4, 2)


def test_a_zero_budget_still_runs_the_minimum_rounds():
    calls = []
    time_engines({"only": sleeper(0, calls)}, np.zeros((2, 1)), instances=1, budget_s=0)
    assert len(calls) == MIN_ROUNDS


def test_trial_describes_its_figures():
    trial = Trial({"onnxruntime": 187.26, "openvino": 221.04}, batch=16, instances=2, seconds=2.04)
    assert trial.label() == "onnxruntime=187.3,openvino=221.0"
    assert trial.describe() == "openvino 221.0 img/s, onnxruntime 187.3 img/s (batches of 16 on 2 instances, 2.0s)"
