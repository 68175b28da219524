"""The view's join of predictions to frames and its per-stream figures (pure, no Kafka)."""

from __future__ import annotations

import json

import pytest

from rtvi.streaming.frames import FrameInfo, prediction_record
from rtvi.view.state import Frame, Label, Prediction, ViewState, percentile

SECOND_NS = 1_000_000_000


def frame(offset: int, stream: str = "cam", partition: int = 0, data: bytes = b"jpeg",
          content_type: str = "image/jpeg") -> Frame:
    return Frame(stream, partition, offset, frame=offset, content_type=content_type, data=data + str(offset).encode())


def prediction(offset: int, stream: str = "cam", partition: int = 0, *, label: str = "tabby", latency: float = 50.0,
               predicted_s: float = 1000.0, error: str | None = None) -> Prediction:
    return Prediction(stream, partition, offset, frame=offset, predicted_ns=int(predicted_s * SECOND_NS),
                      top=() if error else (Label(label, 0.9), Label("other", 0.05)), error=error,
                      latency_ms=None if error else latency)


def test_parses_the_record_the_consumer_writes():
    info = FrameInfo("cam-1", 7, capture_ns=1)
    ok = Prediction.from_json(prediction_record(info, model="m", top=[{"label": "tabby", "index": 281, "score": 0.8}],
                                                source=(3, 42)))
    assert (ok.stream, ok.partition, ok.offset, ok.frame, ok.top, ok.error) == (
        "cam-1", 3, 42, 7, (Label("tabby", 0.8),), None)
    assert ok.latency_ms > 0
    failed = Prediction.from_json(prediction_record(info, model="m", error="INVALID_ARGUMENT: bad jpeg", source=(0, 1)))
    assert failed.error == "INVALID_ARGUMENT: bad jpeg" and failed.top == ()


@pytest.mark.parametrize("value", [b"not json", b"[1]", json.dumps({"stream": "a"}).encode(),
                                   json.dumps({"stream": "a", "partition": 0, "offset": 1, "top": [{"x": 1}]}).encode(),
                                   json.dumps({"stream": "a", "partition": 0, "offset": 1, "top": 5}).encode()])
def test_anything_else_is_a_value_error(value):
    with pytest.raises(ValueError):
        Prediction.from_json(value)


def test_a_prediction_is_joined_to_its_frame_by_partition_and_offset():
    state = ViewState()
    state.add_frame(frame(10), 0.0)
    state.add_frame(frame(11), 0.0)
    state.add_prediction(prediction(10, label="tabby"), 0.1)
    picture = state.streams["cam"].picture
    assert picture.data == b"jpeg10" and picture.frame == 10 and picture.top[0] == Label("tabby", 0.9)
    assert state.buffered_bytes == len(b"jpeg11")
    assert state.summary("cam", 0.1).label == "tabby"


def test_frames_the_predictions_passed_are_counted_as_dropped():
    state = ViewState()
    for offset in range(5):
        state.add_frame(frame(offset), 0.0)
    state.add_prediction(prediction(3), 0.1)  # 0, 1 and 2 were skipped by the consumer
    summary = state.summary("cam", 0.1)
    assert (summary.dropped, summary.processed, summary.frame) == (3, 1, 3)
    assert state.buffered_bytes == len(b"jpeg4")
    state.add_frame(frame(2), 0.2)  # a late read of a frame already passed
    assert state.summary("cam", 0.2).dropped == 4


def test_other_partitions_and_streams_are_not_counted():
    state = ViewState()
    state.add_frame(frame(5, stream="a", partition=0), 0.0)
    state.add_frame(frame(1, stream="b", partition=1), 0.0)
    state.add_prediction(prediction(9, stream="b", partition=1), 0.1)
    assert state.summary("a", 0.1).dropped == 0 and state.summary("b", 0.1).dropped == 1


def test_a_prediction_read_before_its_frame_waits_for_it():
    state = ViewState()
    state.add_prediction(prediction(4, label="espresso"), 0.0)
    assert state.streams["cam"].picture is None
    state.add_frame(frame(4), 0.05)
    assert state.streams["cam"].picture.data == b"jpeg4" and state.buffered_bytes == 0


def test_errors_are_counted_and_shown_until_a_success():
    state = ViewState()
    state.add_frame(frame(0), 0.0)
    state.add_prediction(prediction(0, label="tabby"), 0.0)
    state.add_frame(frame(1), 0.0)
    state.add_prediction(prediction(1, error="INVALID_ARGUMENT: image 0 of 1 is not a decodable image"), 0.1)
    summary = state.summary("cam", 0.1)
    assert summary.failing and summary.failed == 1 and summary.error.startswith("INVALID_ARGUMENT")
    assert summary.error_frame == 1
    assert summary.label == "tabby" and state.streams["cam"].picture.frame == 0, "the last classified frame stays"
    assert state.buffered_bytes == 0
    state.add_prediction(prediction(2), 0.2)
    after = state.summary("cam", 0.2)
    assert not after.failing and after.error is not None, "the last error is kept, the mark is not"


def test_duplicates_after_a_consumer_restart_do_not_move_the_tile_back():
    state = ViewState()
    state.add_prediction(prediction(5, label="new"), 0.0)
    state.add_prediction(prediction(3, label="old"), 0.1)
    summary = state.summary("cam", 0.1)
    assert summary.label == "new" and summary.processed == 1 and state.streams["cam"].duplicates == 1


def test_stale_after_the_threshold_without_predictions():
    state = ViewState(stale_after_s=5)
    state.add_frame(frame(0), 0.0)
    assert not state.summary("cam", 4.9).stale
    assert state.summary("cam", 5.1).stale, "frames but never a prediction"
    state.add_prediction(prediction(0), 6.0)
    assert not state.summary("cam", 10.9).stale
    summary = state.summary("cam", 11.2)
    assert summary.stale and summary.seconds_since_prediction == pytest.approx(5.2)


def test_fps_and_latency_percentiles_over_the_window():
    state = ViewState(window_s=10)
    for i in range(100):  # 10 fps for 10 s, latencies 1..100 ms
        state.add_prediction(prediction(i, latency=float(i + 1), predicted_s=1000 + i / 10), i / 10)
    summary = state.summary("cam", 9.95)
    assert summary.fps == pytest.approx(10, rel=0.02)
    assert (summary.p50_ms, summary.p95_ms) == (50.0, 95.0)
    later = state.summary("cam", 25.0)
    assert later.fps == 0 and later.p50_ms is None, "nothing in the window"


def test_memory_stays_bounded_with_nobody_watching():
    state = ViewState(window_s=10)
    for i in range(1000):  # 100 s at 10 fps, no summary asked for
        state.add_frame(frame(i), i / 10)
        state.add_prediction(prediction(i, predicted_s=1000 + i / 10), i / 10)
    assert len(state.streams["cam"].recent) <= 101 and state.buffered_bytes == 0
    assert not state.streams["cam"].waiting


def test_fps_is_not_inflated_by_a_burst_right_after_start():
    state = ViewState(window_s=10)
    for i in range(20):  # a backlog predicted at 100 fps, read in one go right after the view started
        state.add_prediction(prediction(i, predicted_s=1000 + i / 100), 0.0)
    assert state.summary("cam", 0.5).fps == pytest.approx(20 / 0.5), "no more than the records read in 0.5 s"
    assert state.summary("cam", 9.0).fps == pytest.approx(20 / 9.0, abs=0.01)


def test_history_has_one_point_per_second_of_prediction_time():
    state = ViewState(history_s=3)
    for second in range(5):
        for latency in (10.0, 20.0, 30.0, 40.0):
            state.add_prediction(prediction(second * 100 + int(latency), latency=latency + second,
                                            predicted_s=2000 + second + latency / 100), 0.0)
    history = state.history("cam")
    assert [p[0] for p in history] == [2001, 2002, 2003, 2004], "the last 3 closed seconds and the open one"
    assert history[-1] == (2004, 24.0, 44.0)


def test_the_frame_budget_evicts_oldest_bytes_but_still_counts_drops():
    state = ViewState(frame_budget_bytes=20)
    for offset in range(10):
        state.add_frame(frame(offset, data=b"x" * 8), 0.0)  # 9 bytes each
    assert state.buffered_bytes <= 20
    state.add_prediction(prediction(8), 0.1)
    assert state.summary("cam", 0.1).dropped == 8
    assert state.streams["cam"].picture.frame == 8, "the newest frame is still there"
    state.add_prediction(prediction(9), 0.1)
    assert state.buffered_bytes == 0


def test_streams_beyond_the_limit_are_ignored_and_counted():
    state = ViewState(max_streams=2)
    for name in ("a", "b", "c"):
        state.add_frame(frame(0, stream=name, partition=ord(name)), 0.0)
    state.add_prediction(prediction(0, stream="c", partition=ord("c")), 0.0)
    assert sorted(state.streams) == ["a", "b"] and state.ignored_records == 2


def test_hostile_content_types_are_served_as_jpeg():
    state = ViewState()
    state.add_frame(frame(0, content_type="text/html"), 0.0)
    state.add_prediction(prediction(0), 0.0)
    assert state.streams["cam"].picture.content_type == "image/jpeg"


def test_percentile_is_nearest_rank():
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0 and percentile([1.0, 2.0, 3.0, 4.0], 95) == 4.0
