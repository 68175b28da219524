"""The pure parts of a camera reader: backoff, pacing, the latest-frame slot, freeze detection, encoding."""

from __future__ import annotations

import numpy as np
import pytest

from rtvi.streaming.ingest.cameras import Camera
from rtvi.streaming.ingest.policy import Backoff, FreezeDetector, Pacer
from rtvi.streaming.ingest.reader import Frame, LatestFrame, encode
from rtvi.streaming.producer.sources.base import SourceError


def test_backoff_doubles_from_initial_to_the_cap_and_restarts_after_a_frame():
    middle = Backoff(0.5, 10.0, rng=lambda: 0.5)  # jitter at its midpoint: the plain sequence
    assert [middle.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    middle.reset()
    assert middle.next() == 0.5
    low, high = Backoff(0.5, 10.0, rng=lambda: 0.0), Backoff(0.5, 10.0, rng=lambda: 0.999999)
    assert [round(low.next(), 2) for _ in range(6)] == [0.4, 0.8, 1.6, 3.2, 6.4, 8.0]
    assert [round(high.next(), 2) for _ in range(6)] == [0.6, 1.2, 2.4, 4.8, 9.6, 10.0]  # never above the cap


@pytest.mark.parametrize(("source_fps", "target_fps"), [(25, 5), (25, 15), (30, 7), (25, 25)])
def test_pacing_keeps_the_target_rate_over_a_jittery_source(source_fps, target_fps):
    rng = np.random.default_rng(0)
    pacer, due = Pacer(target_fps), 0
    arrivals = np.arange(0, 60, 1 / source_fps) + rng.uniform(0, 0.3 / source_fps, int(60 * source_fps))
    for now in arrivals:
        due += pacer.due(now)
    assert abs(due / 60 - min(target_fps, source_fps)) / target_fps < 0.02


def test_pacing_makes_up_for_late_frames():
    rng = np.random.default_rng(1)
    pacer, due = Pacer(15), 0
    arrivals = np.arange(0, 60, 1 / 25)
    late = rng.random(arrivals.size) < 0.1  # one frame in ten up to 150 ms late (a loaded host)
    arrivals = np.maximum.accumulate(arrivals + late * rng.uniform(0, 0.15, arrivals.size))
    for now in arrivals:
        due += pacer.due(now)
    assert abs(due / 60 - 15) / 15 < 0.02, due / 60


def test_pacing_publishes_every_frame_of_a_slower_source_and_does_not_burst_after_a_gap():
    pacer = Pacer(10)
    assert all(pacer.due(t) for t in np.arange(0, 5, 0.2))  # 5 fps source, 10 fps target
    pacer = Pacer(5)
    assert pacer.due(0.0) and not pacer.due(0.1) and pacer.due(0.2)
    assert pacer.due(30.0)  # after a stall: the next frame goes ...
    assert not any(pacer.due(30.0 + k * 0.04) for k in range(1, 5))  # ... and no catching up


def test_the_slot_holds_only_the_newest_frame():
    slot = LatestFrame()
    assert slot.take() is None
    frames = [Frame(bytes([i]), i, 1, 1) for i in range(3)]
    assert slot.put(frames[0]) is False
    assert slot.put(frames[1]) is True  # frame 0 was never taken: skipped
    assert slot.take() is frames[1] and slot.take() is None
    assert slot.put(frames[2]) is False


def test_a_picture_that_stops_changing_is_frozen_after_the_timeout():
    detector = FreezeDetector(2.0)
    a, b = np.zeros((48, 64, 3), np.uint8), np.full((48, 64, 3), 9, np.uint8)
    assert not detector.frozen(a, 0.0) and not detector.frozen(b, 1.0)
    assert not detector.frozen(b, 2.9) and detector.frozen(b, 3.0)
    assert not detector.frozen(a, 3.1)
    assert not FreezeDetector(0).frozen(a, 100.0), "0 turns the detector off"


def test_encode_crops_the_region_of_interest_then_resizes():
    image = np.zeros((480, 640, 3), np.uint8)
    image[100:200, 300:500] = 255
    frame = encode(image, Camera("c", "rtsp://h/x", roi=(300, 100, 200, 100)), 90, 123)
    assert (frame.width, frame.height, frame.capture_ns) == (200, 100, 123)
    import cv2

    assert cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_COLOR).mean() > 250
    resized = encode(image, Camera("c", "rtsp://h/x", roi=(600, 400, 200, 200), resize=(64, 64)), 90, 0)
    assert (resized.width, resized.height) == (64, 64)  # a region past the edge is cut at it
    with pytest.raises(SourceError, match=r"roi \[700, 0, 10, 10\] lies outside its 640x480 frames"):
        encode(image, Camera("c", "rtsp://h/x", roi=(700, 0, 10, 10)), 90, 0)
