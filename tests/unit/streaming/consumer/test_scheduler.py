"""The real-time scheduler: round-robin fairness, staleness at dispatch, drop-oldest."""

from __future__ import annotations

from collections import Counter

from rtvi.streaming.consumer.scheduler import FairScheduler

MS = 1_000_000


def test_batches_take_streams_in_turn_across_batches():
    s: FairScheduler[str] = FairScheduler()
    for i in range(6):
        s.add("a", f"a{i}", 1)
    for i in range(2):
        s.add("b", f"b{i}", 1)
    s.add("c", "c0", 1)
    first, _ = s.take(4, now_ns=2)
    second, _ = s.take(4, now_ns=2)
    assert first == ["a0", "b0", "c0", "a1"]
    assert second == ["b1", "a2", "a3", "a4"]  # b's turn carried over; c and b ran dry
    assert s.take(4, now_ns=2) == (["a5"], []) and len(s) == 0


def test_keep_all_never_expires_anything():
    s: FairScheduler[int] = FairScheduler(max_age_ms=0)
    s.add("a", 1, capture_ns=1)
    assert s.expire(now_ns=10**18) == [] and s.take(1, now_ns=10**18) == ([1], [])


def test_frames_that_aged_while_buffered_are_skipped_when_they_would_be_sent():
    s: FairScheduler[str] = FairScheduler(max_age_ms=100)
    s.add("a", "old", capture_ns=0 * MS + 1)
    s.add("a", "fresh", capture_ns=150 * MS)
    s.add("b", "unknown-capture-time", capture_ns=-1)
    batch, expired = s.take(2, now_ns=200 * MS)
    assert batch == ["fresh", "unknown-capture-time"] and expired == ["old"]


def test_expire_sweeps_every_stream_and_forgets_empty_ones():
    s: FairScheduler[str] = FairScheduler(max_age_ms=100)
    s.add("a", "a-old", 10 * MS)
    s.add("a", "a-new", 190 * MS)
    s.add("b", "b-old", 20 * MS)
    assert sorted(s.expire(now_ns=200 * MS)) == ["a-old", "b-old"]
    assert len(s) == 1 and s.take(5, now_ns=200 * MS) == (["a-new"], [])


def test_shed_drops_the_oldest_frames_of_the_longest_stream():
    s: FairScheduler[str] = FairScheduler(max_age_ms=1000)
    for i in range(5):
        s.add("busy", f"busy{i}", 1 + i)
    s.add("quiet", "quiet0", 1)
    assert s.streams == 2 and s.shed(limit=3) == ["busy0", "busy1", "busy2"]
    assert len(s) == 3 and s.take(3, now_ns=2) == (["busy3", "quiet0", "busy4"], [])


def test_discard_forgets_matching_items():
    s: FairScheduler[str] = FairScheduler()
    for item in ("a0", "a1", "b0"):
        s.add(item[0], item, 1)
    s.discard(lambda item: item.startswith("a"))
    assert len(s) == 1 and s.take(5, now_ns=2) == (["b0"], [])


def test_equal_rate_streams_get_equal_shares_under_overload():
    """Arrivals twice the dispatch rate, in bursts per stream and always in the same order
    (as a partition's fetch delivers them): served first-come-first-served, the first
    stream would win every time; in turns, every stream gets its share."""
    s: FairScheduler[str] = FairScheduler(max_age_ms=50)
    served: Counter[str] = Counter()
    streams = [f"cam{i}" for i in range(5)]
    for tick in range(1, 2001):
        now = tick * MS
        if tick % 10 == 0:  # every 10 ms, a burst of 4 frames of each stream, cam0's first
            for stream in streams:
                for _ in range(4):
                    s.add(stream, stream, now)
        s.expire(now)
        s.shed(limit=40)
        if tick % 5 == 0:  # capacity: 4 frames per 5 ms, half the offered 20 per 10 ms
            batch, _ = s.take(4, now)
            served.update(batch)
    counts = [served[stream] for stream in streams]
    assert sum(counts) > 1500
    assert max(counts) - min(counts) <= 0.02 * max(counts), counts
