"""Dynamic batching: concurrent requests merge into one model call.

Requests wait in a queue; when a model instance is free, the batcher takes the
oldest request and every queued request of the same kind (dtype and shape) that fits
in ``max_batch_size``, waiting at most ``max_queue_delay`` after the oldest arrived
for more to come. Requests that waited while the model was busy are already past
their delay and go at once, so under load batches fill up without added latency.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)  # identity: deque.remove() must not compare the numpy inputs
class _Pending:
    kind: Hashable
    inputs: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def size(self) -> int:
        return len(self.inputs)


@dataclass(frozen=True)
class BatchStats:
    """What one model call looked like, for metrics."""

    size: int
    queue_seconds: list[float]
    compute_seconds: float


class DynamicBatcher:
    def __init__(
        self,
        run: Callable[[Hashable, np.ndarray], np.ndarray],
        executor: Executor,
        max_batch_size: int,
        max_queue_delay_s: float,
        on_batch: Callable[[BatchStats], None] = lambda stats: None,
        concurrency: int = 1,
    ) -> None:
        """``concurrency`` batches run at once (one per model instance, each on its own
        thread of ``executor``)."""
        self._run_model = run
        self._executor = executor
        self._max_batch = max_batch_size
        self._delay = max_queue_delay_s
        self._on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._free = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="dynamic-batcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("server shutting down"))

    async def submit(self, kind: Hashable, inputs: np.ndarray) -> np.ndarray:
        """Queue ``inputs`` (batch-first) and return this request's rows of the output."""
        if len(inputs) > self._max_batch:
            raise ValueError(f"batch of {len(inputs)} exceeds max batch size {self._max_batch}")
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(kind, inputs, future))
        self._arrived.set()
        return await future

    def _take_compatible(self, batch: list[_Pending], room: int) -> int:
        """Move queued requests of the batch's kind that fit into ``batch``."""
        kind = batch[0].kind
        taken = 0
        for pending in list(self._queue):
            if pending.future.done():  # caller went away
                self._queue.remove(pending)
            elif pending.kind == kind and pending.size <= room - taken:
                self._queue.remove(pending)
                batch.append(pending)
                taken += pending.size
        return taken

    async def _next_batch(self) -> list[_Pending]:
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            first = self._queue.popleft()
            if not first.future.done():
                break
        batch = [first]
        total = first.size
        deadline = first.enqueued + self._delay
        while total < self._max_batch:
            total += self._take_compatible(batch, self._max_batch - total)
            remaining = deadline - time.perf_counter()
            if total >= self._max_batch or remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                total += self._take_compatible(batch, self._max_batch - total)
                break
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Form the next batch only once an instance is free, so that requests
            # arriving meanwhile join it.
            await self._free.acquire()
            batch = await self._next_batch()
            task = loop.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[_Pending]) -> None:
        try:
            started = time.perf_counter()
            inputs = batch[0].inputs if len(batch) == 1 else np.concatenate([p.inputs for p in batch])
            try:
                outputs = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._run_model, batch[0].kind, inputs
                )
            except Exception as exc:  # the model failed: fail this batch, keep serving
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                return
            finished = time.perf_counter()
            offset = 0
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_result(outputs[offset : offset + pending.size])
                offset += pending.size
            self._on_batch(
                BatchStats(
                    size=len(inputs),
                    queue_seconds=[started - p.enqueued for p in batch],
                    compute_seconds=finished - started,
                )
            )
        finally:
            self._free.release()
