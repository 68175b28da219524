"""The dynamic batcher with a real thread pool and a numpy "model" (rows in, rows out)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from rtvi.serving.batcher import BatchStats, DynamicBatcher


def run(coro):
    return asyncio.run(coro)


def test_arguments_are_checked():
    with pytest.raises(ValueError):
        DynamicBatcher(lambda x: x, ThreadPoolExecutor(1), 0, 0.01)
    with pytest.raises(ValueError):
        DynamicBatcher(lambda x: x, ThreadPoolExecutor(1), 4, -1)


def test_concurrent_requests_share_a_batch_and_get_their_own_rows():
    calls: list[int] = []
    stats: list[BatchStats] = []

    def model(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return batch * 2

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(model, pool, max_batch_size=8, max_queue_delay_s=0.2, on_batch=stats.append)
            batcher.start()
            inputs = [np.full((2, 3), i, dtype=np.float32) for i in range(4)]
            results = await asyncio.gather(*(batcher.submit(x) for x in inputs))
            await batcher.stop()
        return inputs, results

    inputs, results = run(main())
    for x, y in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(y, x * 2)
    assert calls == [8] and stats[0].size == 8 and len(stats[0].queue_seconds) == 4


def test_rows_of_different_shapes_never_share_a_batch():
    calls: list[tuple] = []

    def model(batch):
        calls.append(batch.shape)
        return batch.sum(axis=1)

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(model, pool, 8, 0.1)
            batcher.start()
            await asyncio.gather(batcher.submit(np.ones((1, 3))), batcher.submit(np.ones((1, 5))),
                                 batcher.submit(np.ones((2, 3))))
            await batcher.stop()

    run(main())
    assert sorted(calls) == [(1, 5), (3, 3)]


def test_a_failing_batch_fails_its_requests_and_the_batcher_keeps_serving():
    def model(batch):
        if (batch < 0).any():
            raise RuntimeError("negative input")
        return batch

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(model, pool, 4, 0.0)
            batcher.start()
            with pytest.raises(RuntimeError, match="negative"):
                await batcher.submit(-np.ones((1, 2)))
            ok = await batcher.submit(np.ones((1, 2)))
            await batcher.stop()
        return ok

    np.testing.assert_array_equal(run(main()), np.ones((1, 2)))


def test_oversized_and_empty_requests_are_refused():
    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(lambda x: x, pool, 4, 0.0)
            batcher.start()
            with pytest.raises(ValueError, match="max batch size"):
                await batcher.submit(np.ones((5, 1)))
            with pytest.raises(ValueError, match="max batch size"):
                await batcher.submit(np.ones((0, 1)))
            await batcher.stop()

    run(main())


def test_instances_compute_concurrently():
    active, peak = 0, 0
    lock = threading.Lock()

    def model(batch):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.2)
        with lock:
            active -= 1
        return batch

    async def main():
        with ThreadPoolExecutor(2) as pool:
            batcher = DynamicBatcher(model, pool, 1, 0.0, concurrency=2)
            batcher.start()
            await asyncio.gather(*(batcher.submit(np.ones((1, 1))) for _ in range(4)))
            await batcher.stop()

    run(main())
    assert peak == 2


def test_stalled_seconds_grow_only_while_work_waits_without_progress():
    release = threading.Event()

    def model(batch):
        release.wait(10)
        return batch

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(model, pool, 1, 0.0)
            batcher.start()
            assert batcher.stalled_seconds() == 0.0  # idle
            await asyncio.sleep(0.3)
            assert batcher.stalled_seconds() == 0.0  # idle time is not a stall
            task = asyncio.ensure_future(batcher.submit(np.ones((1, 1))))
            await asyncio.sleep(0.5)
            stalled = batcher.stalled_seconds()
            release.set()
            await task
            await asyncio.sleep(0.05)
            after = batcher.stalled_seconds()
            await batcher.stop()
        return stalled, after

    stalled, after = run(main())
    assert 0.4 <= stalled < 5 and after == 0.0


def test_a_request_behind_one_that_does_not_fit_joins_the_batch():
    """Found by the soak: taking a queued request that is not first in the queue compared
    it with the ones before it field by field, numpy inputs included; the comparison
    raised inside the batcher's task, which died, and every later request hung while
    health still said SERVING."""

    async def main() -> list[np.ndarray]:
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(lambda x: x[:, 0], pool, max_batch_size=16, max_queue_delay_s=0.05)
            requests = [np.full((rows, 3), i, np.float32) for i, rows in enumerate((2, 8, 10, 2))]
            calls = [asyncio.ensure_future(batcher.submit(x)) for x in requests]
            await asyncio.sleep(0)  # all queued before the first batch forms: 2 + 8, then 10 skipped, 2 taken
            batcher.start()
            try:
                return await asyncio.wait_for(asyncio.gather(*calls), 10)
            finally:
                await batcher.stop()

    assert [list(r) for r in run(main())] == [[0] * 2, [1] * 8, [2] * 10, [3] * 2]


def test_rows_of_different_dtypes_never_share_a_batch():
    """uint8 image crops and float pixels of one shape are different inputs to the model."""
    calls: list[str] = []

    def model(batch):
        calls.append(batch.dtype.str)
        return batch

    async def main():
        with ThreadPoolExecutor(1) as pool:
            batcher = DynamicBatcher(model, pool, 8, 0.1)
            batcher.start()
            await asyncio.gather(batcher.submit(np.ones((1, 3), np.uint8)), batcher.submit(np.ones((1, 3), np.float32)))
            await batcher.stop()

    run(main())
    assert sorted(calls) == sorted([np.dtype(np.uint8).str, np.dtype(np.float32).str])


class _RecordingExecutor(ThreadPoolExecutor):
    """Notes (on the event loop's thread) when a batch is handed to it."""

    def __init__(self, events: list[str]) -> None:
        super().__init__(1)
        self.events = events

    def submit(self, fn, /, *args, **kwargs):
        self.events.append("batch handed to the instance")
        return super().submit(fn, *args, **kwargs)


def test_the_next_batch_starts_before_the_finished_batch_callers_resume():
    """A free instance must not wait while the event loop builds the previous batch's
    responses: the queued batch is handed over first, then the callers wake."""
    events: list[str] = []
    first_running = threading.Event()
    release = threading.Event()

    def model(batch):
        first_running.set()
        release.wait(10)
        return batch

    async def caller(batcher, name):
        await batcher.submit(np.ones((1, 1)))
        events.append(f"{name} resumed")

    async def main():
        with _RecordingExecutor(events) as pool:
            batcher = DynamicBatcher(model, pool, 1, 0.0)
            batcher.start()
            first = asyncio.ensure_future(caller(batcher, "first"))
            while not first_running.is_set():
                await asyncio.sleep(0.01)
            second = asyncio.ensure_future(caller(batcher, "second"))
            await asyncio.sleep(0.05)  # the second request waits in the queue
            release.set()
            await asyncio.wait_for(asyncio.gather(first, second), 10)
            await batcher.stop()

    run(main())
    assert events == ["batch handed to the instance", "batch handed to the instance", "first resumed",
                      "second resumed"]
