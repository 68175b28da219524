"""Which ready frames go to inference next: fair across streams, fresh in real-time mode.

Pure logic (no Kafka, no clock of its own: callers pass ``now_ns``), unit-tested.

* **Fairness.** Ready frames wait in one FIFO queue per stream; a batch is filled by
  taking one frame from each stream in turn, and the turn order carries over from one
  batch to the next. Under overload every stream of the same rate therefore gets the
  same share of inference, whichever partitions the streams share.
* **Staleness judged at dispatch.** With a maximum age set, a frame that aged past it
  while it waited is skipped at the moment it would be sent (``take``) and by a sweep
  of the queues' heads (``expire``), so no inference is spent on a frame that is
  already too late, however long it was buffered.
* **Drop oldest.** ``shed`` bounds the frames held: past the bound, the oldest frame of
  the longest queue goes, so a burst on one stream costs that stream, not the others.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class FairScheduler(Generic[T]):
    """Ready items per stream, taken round-robin; ``max_age_ms`` 0 never expires anything."""

    def __init__(self, max_age_ms: float = 0.0) -> None:
        self.max_age_ns = int(max_age_ms * 1e6)
        self._queues: dict[str, deque[tuple[int, T]]] = {}
        self._turns: deque[str] = deque()  # streams with ready items, next turn first
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def streams(self) -> int:
        """Streams with frames waiting."""
        return len(self._turns)

    def add(self, stream: str, item: T, capture_ns: int) -> None:
        """Queue ``item`` of ``stream``; ``capture_ns`` <= 0 (unknown) never expires."""
        queue = self._queues.get(stream)
        if queue is None:
            queue = self._queues[stream] = deque()
            self._turns.append(stream)
        queue.append((capture_ns, item))
        self._count += 1

    def _expired(self, capture_ns: int, now_ns: int) -> bool:
        return bool(self.max_age_ns) and capture_ns > 0 and now_ns - capture_ns > self.max_age_ns

    def take(self, n: int, now_ns: int) -> tuple[list[T], list[T]]:
        """Up to ``n`` fresh items, one per stream in turn; and the expired ones met on the way."""
        batch: list[T] = []
        expired: list[T] = []
        while len(batch) < n and self._turns:
            stream = self._turns.popleft()
            queue = self._queues[stream]
            while queue:
                capture_ns, item = queue.popleft()
                self._count -= 1
                if self._expired(capture_ns, now_ns):
                    expired.append(item)
                    continue
                batch.append(item)
                break
            if queue:
                self._turns.append(stream)
            else:
                del self._queues[stream]
        return batch, expired

    def expire(self, now_ns: int) -> list[T]:
        """Remove every item older than the maximum age (queues are in capture order, so
        only their heads need looking at)."""
        if not self.max_age_ns:
            return []
        expired: list[T] = []
        for stream in list(self._turns):
            queue = self._queues[stream]
            while queue and self._expired(queue[0][0], now_ns):
                expired.append(queue.popleft()[1])
                self._count -= 1
            if not queue:
                self._forget(stream)
        return expired

    def shed(self, limit: int) -> list[T]:
        """Drop the oldest item of the longest queue until at most ``limit`` are held."""
        shed: list[T] = []
        while self._count > limit:
            stream = max(self._turns, key=lambda s: len(self._queues[s]))
            shed.append(self._queues[stream].popleft()[1])
            self._count -= 1
            if not self._queues[stream]:
                self._forget(stream)
        return shed

    def discard(self, predicate: Callable[[T], bool]) -> None:
        """Forget every item for which ``predicate`` holds (frames of revoked partitions)."""
        for stream in list(self._turns):
            queue = self._queues[stream]
            kept = deque(entry for entry in queue if not predicate(entry[1]))
            self._count -= len(queue) - len(kept)
            self._queues[stream] = kept
            if not kept:
                self._forget(stream)

    def _forget(self, stream: str) -> None:
        del self._queues[stream]
        self._turns.remove(stream)
