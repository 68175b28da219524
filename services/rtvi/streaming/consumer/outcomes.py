"""The one record of what the consumer did: every outcome is counted here, once, in Prometheus.

Frames end in one of three ways (processed, dropped on purpose, failed with an error
record); inference calls take a round trip, or are retried. Each is one call here, which
updates the metrics and nothing else; the log block (``report``), `rtvi up`, `rtvi
loadtest` and the tests all read those same metrics, so no figure can disagree with another.
"""

from __future__ import annotations

import json
import time

from rtvi.streaming.consumer.metrics import ConsumerMetrics, StreamLabels


def _total(counter) -> float:
    """The sum of a counter's ``_total`` samples over all its label values."""
    return sum(s.value for family in counter.collect() for s in family.samples if s.name.endswith("_total"))


class Outcomes:
    """Counts frames and calls into ``metrics``; stream labels capped at ``stream_label_limit``."""

    def __init__(self, metrics: ConsumerMetrics, stream_label_limit: int) -> None:
        self.metrics = metrics
        self._labels = StreamLabels(stream_label_limit)
        # When the first frame arrived: the idle time before it is not "slow" (the block's fps).
        self.started: float | None = None

    # --- frames ----------------------------------------------------------------
    def consumed(self) -> None:
        if self.started is None:
            self.started = time.monotonic()
        self.metrics.consumed.inc()

    def processed(self, stream: str, age_ms: float | None) -> None:
        """Its prediction was acknowledged by the broker, ``age_ms`` after capture (None: unknown)."""
        self.metrics.processed.inc()
        self._stream(stream, "processed")
        if age_ms is not None:
            self.metrics.latency.observe(age_ms / 1000)

    def dropped(self, stream: str, reason: str) -> None:
        """Skipped on purpose (real time): ``stale``, ``expired`` or ``overflow``."""
        self.metrics.dropped.labels(reason).inc()
        self._stream(stream, "dropped")

    def failed(self, stream: str, reason: str) -> None:
        """Got an error record instead of a prediction."""
        self.metrics.failed.labels(reason).inc()
        self._stream(stream, "failed")

    def finished(self) -> int:
        """Frames done one way or another: processed, dropped or failed."""
        m = self.metrics
        return int(_total(m.processed) + _total(m.dropped) + _total(m.failed))

    def _stream(self, stream: str, outcome: str) -> None:
        self.metrics.stream_frames.labels(self._labels(stream), outcome).inc()

    # --- calls, publishing, commits ----------------------------------------------
    def inferred(self, frames: int, seconds: float, window: int) -> None:
        """A call of ``frames`` took ``seconds``; the dispatch now allows ``window`` frames in flight."""
        self.metrics.batch_size.observe(frames)
        self.metrics.inference_seconds.observe(seconds)
        self.metrics.window.set(window)

    def retried(self, code: str) -> int:
        """A retryable inference error; returns how many retries there were so far (all codes)."""
        self.metrics.retries.labels(code).inc()
        return int(_total(self.metrics.retries))

    def publish_retried(self) -> None:
        self.metrics.publish_retries.inc()

    def committed(self, ok: bool) -> None:
        self.metrics.commits.labels("ok" if ok else "error").inc()

    # --- state ---------------------------------------------------------------------
    def holding(self, buffered: int, in_flight: int, busy_seconds: float) -> None:
        """What the pipeline holds now; ``busy_seconds`` passed while it held frames."""
        self.metrics.buffered.set(buffered)
        self.metrics.in_flight.set(in_flight)
        if busy_seconds:
            self.metrics.busy_seconds.inc(busy_seconds)

    def assigned(self, topic: str, partition: int) -> None:
        self.metrics.assigned.labels(topic, str(partition)).set(1)

    def revoked(self, topic: str, partition: int) -> None:
        """A partition went to another member: not ours any more, and its lag is that member's to report
        (a stale value left here would be counted twice by whoever sums the pods)."""
        self.metrics.assigned.labels(topic, str(partition)).set(0)
        try:
            self.metrics.lag.remove(topic, str(partition))
        except KeyError:  # no statistics arrived for it yet
            pass

    def kafka_statistics(self, stats_json: str) -> None:
        """librdkafka's ``stats_cb``: each assigned partition's lag, as the broker reports it."""
        stats = json.loads(stats_json)
        for topic, data in stats.get("topics", {}).items():
            for partition, pdata in data.get("partitions", {}).items():
                lag = pdata.get("consumer_lag", -1)
                if partition != "-1" and lag >= 0:
                    self.metrics.lag.labels(topic, partition).set(lag)
