"""Prometheus metrics of the consumer (names documented in the README)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Fine around 0.25-1.5 s, where real-time bounds are set, so quantiles read from the
# buckets (`rtvi up`, `rtvi loadtest`) stay close to the exact ones in the log.
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1, 1.25, 1.5,
            2, 2.5, 5, 10, 30)

OTHER_STREAMS = "other"

CONSUMED = Counter("rtvi_consumer_frames_consumed_total", "Frames read from the frames topic")
PROCESSED = Counter("rtvi_consumer_frames_processed_total", "Frames whose prediction the broker acknowledged")
DROPPED = Counter("rtvi_consumer_frames_dropped_total", "Frames skipped on purpose", ["reason"])
FAILED = Counter("rtvi_consumer_frames_failed_total", "Frames that got an error record instead of a prediction", ["reason"])
STREAM_FRAMES = Counter(
    "rtvi_consumer_stream_frames_total",
    "Frames finished per stream, by outcome (processed, dropped, failed); streams past --stream-label-limit "
    f"are counted under stream=\"{OTHER_STREAMS}\"",
    ["stream", "outcome"],
)
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
ASSIGNED = Gauge(
    "rtvi_consumer_partition_assigned",
    "1 for each partition this consumer owns now (0 once revoked): which pod reads which partition",
    ["topic", "partition"],
)
COMMITS = Counter("rtvi_consumer_commits_total", "Offset commits", ["result"])


class StreamLabels:
    """Stream ids as metric label values, at most ``limit`` of them.

    Stream ids come from the data (one per camera), so a label per id would let a
    producer grow the series count without bound. The first ``limit`` streams seen keep
    their own label for the life of the process (stable series, unlike a top-N that
    changes its members); every later one is counted under ``other``.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._named: set[str] = set()

    def __call__(self, stream: str) -> str:
        if stream in self._named:
            return stream
        if len(self._named) < self.limit and stream != OTHER_STREAMS:
            self._named.add(stream)
            return stream
        return OTHER_STREAMS


def revoked(topic: str, partition: int) -> None:
    """A partition went to another member: not ours any more, and its lag is that member's to report
    (a stale value left here would be counted twice by whoever sums the pods)."""
    ASSIGNED.labels(topic, str(partition)).set(0)
    try:
        LAG.remove(topic, str(partition))
    except KeyError:  # no statistics arrived for it yet
        pass


def count_stream(labels: StreamLabels, stream: str, outcome: str) -> None:
    STREAM_FRAMES.labels(labels(stream), outcome).inc()
