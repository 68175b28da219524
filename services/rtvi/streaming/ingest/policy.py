"""The pure decisions of a camera reader: how long to wait before reconnecting, which frames
to publish for a target rate, and when a picture has stopped changing. No threads, no I/O:
unit-tested with synthetic clocks."""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable

import numpy as np


class Backoff:
    """Delays before reconnecting: ``initial`` doubling per failure up to ``maximum``, each
    +-``jitter`` (so a fleet that lost its network together does not reconnect in step)."""

    def __init__(self, initial: float, maximum: float, jitter: float = 0.2,
                 rng: Callable[[], float] = random.random) -> None:
        self.initial, self.maximum, self.jitter, self._rng = initial, maximum, jitter, rng
        self.failures = 0

    def next(self) -> float:
        base = min(self.maximum, self.initial * 2 ** min(self.failures, 30))
        self.failures += 1
        return min(self.maximum, base * (1 + self.jitter * (2 * self._rng() - 1)))

    def reset(self) -> None:
        self.failures = 0


class Pacer:
    """Which frames are due at ``fps``: the long-run rate is ``fps`` whatever the camera's
    own rate above it, through the jitter of a loaded network or host (a late frame is made
    up by the next ones); after a real gap (a stall) it starts afresh rather than catching up."""

    GAP_S = 0.5

    def __init__(self, fps: float) -> None:
        self.interval = 1.0 / fps
        self.next_due = float("-inf")

    def due(self, now: float) -> bool:
        if now < self.next_due:
            return False
        behind = now - self.next_due
        self.next_due = self.next_due + self.interval if behind < max(self.interval, self.GAP_S) \
            else now + self.interval
        return True


class FreezeDetector:
    """A camera whose encoder hung often keeps resending its last frame. Such frames decode
    to exactly the same picture, where a live but still scene does not (sensor noise, a
    clock overlay), so a picture unchanged to the bit for ``timeout_s`` (compared on a
    subsampled fingerprint of single pixels, never averaged) means a frozen stream."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._fingerprint: int | None = None
        self._since = 0.0

    def frozen(self, image: np.ndarray, now: float) -> bool:
        if not self.timeout_s:
            return False
        fingerprint = zlib.crc32(np.ascontiguousarray(image[::8, ::8]).data)
        if fingerprint != self._fingerprint:
            self._fingerprint, self._since = fingerprint, now
            return False
        return now - self._since >= self.timeout_s
