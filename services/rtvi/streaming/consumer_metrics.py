"""Prometheus metrics of the consumer (names documented in the README)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 30)

CONSUMED = Counter("rtvi_consumer_frames_consumed_total", "Frames read from the frames topic")
PROCESSED = Counter("rtvi_consumer_frames_processed_total", "Frames whose prediction the broker acknowledged")
DROPPED = Counter("rtvi_consumer_frames_dropped_total", "Frames skipped on purpose", ["reason"])
FAILED = Counter("rtvi_consumer_frames_failed_total", "Frames that got an error record instead of a prediction", ["reason"])
RETRIES = Counter("rtvi_consumer_inference_retries_total", "Inference calls retried (server unavailable, overloaded)", ["code"])
PUBLISH_RETRIES = Counter("rtvi_consumer_publish_retries_total", "Prediction records produced again after a failed delivery")
IN_FLIGHT = Gauge("rtvi_consumer_in_flight_requests", "ModelInfer calls awaiting an answer")
BUFFERED = Gauge("rtvi_consumer_buffered_frames", "Frames read but not yet committed")
BATCH_SIZE = Histogram("rtvi_consumer_batch_size", "Frames per ModelInfer call", buckets=(1, 2, 4, 8, 16, 32, 64))
INFERENCE_SECONDS = Histogram("rtvi_consumer_inference_duration_seconds", "ModelInfer round trip", buckets=_SECONDS)
CAPTURE_TO_PREDICTION_SECONDS = Histogram(
    "rtvi_consumer_capture_to_prediction_seconds",
    "From the frame's capture time to its prediction being acknowledged by the broker",
    buckets=_SECONDS,
)
LAG = Gauge("rtvi_consumer_lag", "Consumer lag in records, as the broker reports it", ["topic", "partition"])
COMMITS = Counter("rtvi_consumer_commits_total", "Offset commits", ["result"])
