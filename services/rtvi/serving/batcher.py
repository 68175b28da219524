"""Dynamic batching: concurrent requests merge into one model call.

Requests wait in a queue; when a model instance is free, the batcher takes the
oldest request and every queued request with the same key (dtype and shape of a row) that
fits in ``max_batch_size``, waiting at most ``max_queue_delay`` after the oldest arrived
for more to come. Requests that waited while the model was busy are already past
their delay and go at once, so under load batches fill up without added latency.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

# Requests batch together when their rows have the same dtype and shape.
BatchKey = tuple[str, tuple[int, ...]]


@dataclass(eq=False)  # identity: deque.remove() must not compare the numpy inputs
class _Pending:
    key: BatchKey
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
    """Merges concurrent ``submit`` calls into calls of ``run`` (rows in, rows out)."""

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        executor: Executor,
        max_batch_size: int,
        max_queue_delay_s: float,
        on_batch: Callable[[BatchStats], None] = lambda stats: None,
        concurrency: int = 1,
    ) -> None:
        """``concurrency`` batches run at once (one per model instance, each on its own
        thread of ``executor``)."""
        if max_batch_size < 1 or concurrency < 1 or max_queue_delay_s < 0:
            raise ValueError(
                f"max_batch_size and concurrency must be >= 1 and the delay >= 0, got {max_batch_size}, "
                f"{concurrency}, {max_queue_delay_s}")
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
        self._computing = 0
        # When work last moved: a batch finished, or work arrived at an idle batcher.
        self._progress = time.monotonic()

    @property
    def busy(self) -> bool:
        return bool(self._queue) or self._computing > 0

    def stalled_seconds(self) -> float:
        """How long requests have waited without any batch completing (0 when idle)."""
        return time.monotonic() - self._progress if self.busy else 0.0

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

    async def submit(self, inputs: np.ndarray) -> np.ndarray:
        """Queue ``inputs`` (batch-first) and return this request's rows of the output."""
        if not 1 <= len(inputs) <= self._max_batch:
            raise ValueError(f"batch of {len(inputs)} is not within 1..{self._max_batch} (max batch size)")
        future = asyncio.get_running_loop().create_future()
        if not self.busy:
            self._progress = time.monotonic()
        self._queue.append(_Pending((inputs.dtype.str, tuple(inputs.shape[1:])), inputs, future))
        self._arrived.set()
        return await future

    def _take_compatible(self, batch: list[_Pending], room: int) -> int:
        """Move queued requests with the batch's key that fit into ``batch``."""
        key = batch[0].key
        taken = 0
        for pending in list(self._queue):
            if pending.future.done():  # caller went away
                self._queue.remove(pending)
            elif pending.key == key and pending.size <= room - taken:
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
            # Hand the batch to the instance now, not in a task's first step: that step
            # would queue behind the callbacks that build the previous batch's responses,
            # and the instance would sit idle for that long after every batch.
            self._computing += 1
            started = time.perf_counter()
            outputs = loop.run_in_executor(self._executor, self._compute, [p.inputs for p in batch])
            task = loop.create_task(self._deliver(batch, outputs, started))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _compute(self, inputs: list[np.ndarray]) -> np.ndarray:
        """One model call on the instance's thread; the concatenation (megabytes of pixels)
        runs there too, so it never holds up the event loop."""
        return self._run_model(inputs[0] if len(inputs) == 1 else np.concatenate(inputs))

    async def _deliver(self, batch: list[_Pending], outputs: asyncio.Future, started: float) -> None:
        try:
            result = await outputs
        except Exception as exc:  # the model failed: fail this batch, keep serving
            result = exc
        finally:
            finished = time.perf_counter()
            # Free the instance before waking the callers: the batcher's loop is then first
            # in line and starts the next batch before this batch's responses are built.
            self._computing -= 1
            self._progress = time.monotonic()
            self._free.release()
        if isinstance(result, Exception):
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(result)
            return
        offset = 0
        for pending in batch:
            if not pending.future.done():
                pending.future.set_result(result[offset : offset + pending.size])
            offset += pending.size
        self._on_batch(
            BatchStats(
                size=offset,
                queue_seconds=[started - p.enqueued for p in batch],
                compute_seconds=finished - started,
            )
        )
