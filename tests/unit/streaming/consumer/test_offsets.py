"""Publish and commit order of one partition: the rules at-least-once rests on."""

from __future__ import annotations

from rtvi.streaming.consumer.offsets import PartitionState
from rtvi.streaming.frames import FrameInfo


def _partition(n: int) -> tuple[PartitionState, list]:
    state = PartitionState(0)
    slots = [state.add(100 + i, FrameInfo("cam", i, 1), b"jpeg") for i in range(n)]
    return state, slots


def test_records_are_published_in_offset_order_only():
    state, slots = _partition(4)
    slots[1].record = b"p1"
    slots[2].skip = True
    assert list(state.ready_to_publish()) == []  # frame 0 has no record yet: nothing may overtake it
    slots[0].record = b"p0"
    assert list(state.ready_to_publish()) == slots[:3]  # 0, 1 and the skipped 2; 3 still waits
    assert list(state.pending) == [slots[3]] and len(state) == 4


def test_commit_position_is_the_end_of_the_delivered_prefix():
    state, slots = _partition(3)
    for slot in slots:
        slot.record = b"p"
    list(state.ready_to_publish())
    assert state.commit_position() is None  # nothing acknowledged yet
    slots[1].delivered = True
    assert state.commit_position() is None  # 0 unacknowledged: committing 102 would skip it
    slots[0].delivered = True
    assert state.commit_position() == 102  # next offset to read after 100 and 101
    assert state.commit_position() is None  # no new progress
    slots[2].delivered = True
    assert state.commit_position() == 103 and len(state) == 0
