"""Reading a consumer's Prometheus text back: counters, per-stream counts, quantiles."""

from __future__ import annotations

import pytest

from rtvi.streaming.probe import from_prometheus, histogram_quantile

TEXT = """\
# TYPE rtvi_consumer_frames_processed_total counter
rtvi_consumer_frames_processed_total 90.0
# TYPE rtvi_consumer_frames_consumed_total counter
rtvi_consumer_frames_consumed_total 120.0
# TYPE rtvi_consumer_frames_dropped_total counter
rtvi_consumer_frames_dropped_total{reason="stale"} 4.0
rtvi_consumer_frames_dropped_total{reason="expired"} 21.0
# TYPE rtvi_consumer_frames_failed_total counter
rtvi_consumer_frames_failed_total{reason="invalid_argument"} 1.0
# TYPE rtvi_consumer_buffered_frames gauge
rtvi_consumer_buffered_frames 4.0
# TYPE rtvi_consumer_stream_frames_total counter
rtvi_consumer_stream_frames_total{outcome="processed",stream="cam-1"} 46.0
rtvi_consumer_stream_frames_total{outcome="dropped",stream="cam-1"} 12.0
rtvi_consumer_stream_frames_total{outcome="processed",stream="other"} 44.0
# TYPE rtvi_consumer_capture_to_prediction_seconds histogram
rtvi_consumer_capture_to_prediction_seconds_bucket{le="0.25"} 10.0
rtvi_consumer_capture_to_prediction_seconds_bucket{le="0.5"} 80.0
rtvi_consumer_capture_to_prediction_seconds_bucket{le="1.0"} 90.0
rtvi_consumer_capture_to_prediction_seconds_bucket{le="+Inf"} 90.0
rtvi_consumer_capture_to_prediction_seconds_count 90.0
"""


def test_counters_gauges_and_streams():
    m = from_prometheus("pod", TEXT)
    assert (m.processed, m.consumed, m.dropped, m.failed, m.buffered) == (90, 120, 25, 1, 4)
    assert m.done == 116
    assert m.streams == {"cam-1": {"processed": 46, "dropped": 12}, "other": {"processed": 44}}


def test_quantiles_interpolate_within_buckets():
    m = from_prometheus("pod", TEXT)
    # rank 45 of 90 lies half way through the (0.25, 0.5] bucket's 70 frames: 0.25 + 0.25 * 35/70
    assert m.quantile_ms(0.5) == pytest.approx(375.0)
    assert m.quantile_ms(0.95) == pytest.approx(775.0)  # rank 85.5: 5.5 of the 10 frames in (0.5, 1.0]
    assert histogram_quantile(0.5, {}) is None
