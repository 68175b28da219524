"""The consumer's Prometheus metrics: their names, and one set of them per registry.

The names are constants because other modules read them back from ``/metrics``
(``streaming/probe.py`` for `rtvi up` and `rtvi loadtest`, ``cluster/status.py``); the
README documents them. A ``ConsumerMetrics`` is built on a registry: the service uses
prometheus_client's default one (with the process collector), in-process tests a fresh one
each, so two consumers in one test process never share a counter.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

# Sample names, as they appear on /metrics.
CONSUMED = "rtvi_consumer_frames_consumed_total"
PROCESSED = "rtvi_consumer_frames_processed_total"
DROPPED = "rtvi_consumer_frames_dropped_total"  # label reason: stale, expired, overflow
FAILED = "rtvi_consumer_frames_failed_total"  # label reason
STREAM_FRAMES = "rtvi_consumer_stream_frames_total"  # labels stream, outcome
RETRIES = "rtvi_consumer_inference_retries_total"  # label code
PUBLISH_RETRIES = "rtvi_consumer_publish_retries_total"
BUSY_SECONDS = "rtvi_consumer_busy_seconds_total"
IN_FLIGHT = "rtvi_consumer_in_flight_requests"
BUFFERED = "rtvi_consumer_buffered_frames"
WINDOW = "rtvi_consumer_dispatch_window_frames"
BATCH_SIZE = "rtvi_consumer_batch_size"
INFERENCE_SECONDS = "rtvi_consumer_inference_duration_seconds"
LATENCY = "rtvi_consumer_capture_to_prediction_seconds"
LAG = "rtvi_consumer_lag"  # labels topic, partition
ASSIGNED = "rtvi_consumer_partition_assigned"  # labels topic, partition
COMMITS = "rtvi_consumer_commits_total"  # label result

# Fine around 0.25-1.5 s, where real-time bounds are set, so quantiles read from the
# buckets (the log block, `rtvi up`, `rtvi loadtest`) stay close to the exact ones.
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1, 1.25,
                   1.5, 2, 2.5, 5, 10, 30)

OTHER_STREAMS = "other"


class ConsumerMetrics:
    """Every metric of one consumer, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        on = {"registry": registry}
        self.consumed = Counter(CONSUMED, "Frames read from the frames topic", **on)
        self.processed = Counter(PROCESSED, "Frames whose prediction the broker acknowledged", **on)
        self.dropped = Counter(DROPPED, "Frames skipped on purpose", ["reason"], **on)
        self.failed = Counter(FAILED, "Frames that got an error record instead of a prediction", ["reason"], **on)
        self.stream_frames = Counter(
            STREAM_FRAMES,
            "Frames finished per stream, by outcome (processed, dropped, failed); streams past --stream-label-limit "
            f"are counted under stream=\"{OTHER_STREAMS}\"",
            ["stream", "outcome"], **on,
        )
        self.retries = Counter(RETRIES, "Inference calls retried (server unavailable, overloaded)", ["code"], **on)
        self.publish_retries = Counter(PUBLISH_RETRIES, "Prediction records produced again after a failed delivery",
                                       **on)
        self.busy_seconds = Counter(BUSY_SECONDS, "Seconds during which the consumer held frames to finish", **on)
        self.in_flight = Gauge(IN_FLIGHT, "ModelInfer calls awaiting an answer", **on)
        self.buffered = Gauge(BUFFERED, "Frames read but not yet committed", **on)
        self.window = Gauge(WINDOW, "Frames the dispatch lets be in flight at once (batch size x calls)", **on)
        self.batch_size = Histogram(BATCH_SIZE, "Frames per ModelInfer call", buckets=(1, 2, 4, 8, 16, 32, 64), **on)
        self.inference_seconds = Histogram(INFERENCE_SECONDS, "ModelInfer round trip", buckets=SECONDS_BUCKETS, **on)
        self.latency = Histogram(
            LATENCY, "From the frame's capture time to its prediction being acknowledged by the broker",
            buckets=SECONDS_BUCKETS, **on,
        )
        self.lag = Gauge(LAG, "Consumer lag in records, as the broker reports it", ["topic", "partition"], **on)
        self.assigned = Gauge(
            ASSIGNED, "1 for each partition this consumer owns now (0 once revoked): which pod reads which partition",
            ["topic", "partition"], **on,
        )
        self.commits = Counter(COMMITS, "Offset commits", ["result"], **on)


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
