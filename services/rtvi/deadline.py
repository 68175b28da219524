"""A point in (monotonic) time by which something must be done.

One small value object instead of ``deadline - time.monotonic()`` written inline wherever a
wait is bounded (Quix Streams keeps the same in ``checkpointing/deadline.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic() seconds; inf never expires

    @classmethod
    def from_timeout(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    @classmethod
    def never(cls) -> Deadline:
        return cls(float("inf"))

    @property
    def remaining(self) -> float:
        """Seconds left, never below 0."""
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at
