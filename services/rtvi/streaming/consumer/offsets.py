"""In-order publish and commit positions of one partition (pure: no Kafka in here).

At-least-once rests on two rules kept in this module: a frame's record is published
only after every earlier frame of its partition has its record (or was skipped), and
an offset is committed only once every frame before it was acknowledged by the broker
(its prediction and any event it made: one unit of work).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from rtvi.streaming.frames import FrameInfo


@dataclass(eq=False)
class Slot:
    """One frame's way through the pipeline."""

    partition: PartitionState
    offset: int
    info: FrameInfo
    value: bytes
    record: bytes | None = None  # the prediction or error record, once known
    top1: tuple[str, float] | None = None  # the prediction's best label and score
    skip: bool = False  # dropped on purpose: committed without a record
    failed: bool = False  # its record is an error record
    unacked: int = 0  # records published for it (prediction, events) the broker has not acknowledged
    delivered: bool = False  # the broker acknowledged all of them (or it was skipped)


@dataclass(eq=False)
class PartitionState:
    """Frames of one partition in offset order: published in order, committed in order."""

    partition: int
    pending: deque[Slot] = field(default_factory=deque)  # not yet published
    unacked: deque[Slot] = field(default_factory=deque)  # published, awaiting the broker's ack
    revoked: bool = False

    def add(self, offset: int, info: FrameInfo, value: bytes) -> Slot:
        slot = Slot(self, offset, info, value)
        self.pending.append(slot)
        return slot

    def ready_to_publish(self) -> Iterator[Slot]:
        """The frames whose turn has come: the prefix of ``pending`` that has a record or is skipped."""
        while self.pending and (self.pending[0].record is not None or self.pending[0].skip):
            slot = self.pending.popleft()
            self.unacked.append(slot)
            yield slot

    def commit_position(self) -> int | None:
        """The offset to commit once the delivered prefix grew, else None."""
        last = None
        while self.unacked and self.unacked[0].delivered:
            last = self.unacked.popleft().offset
        return None if last is None else last + 1

    def __len__(self) -> int:
        return len(self.pending) + len(self.unacked)
