"""A consumer's progress and health read back from its HTTP endpoint.

Shared by `rtvi up` (a live status line, the exit code) and `rtvi loadtest` (many pods
summed): both learn what a consumer did from its metrics, never from its log text.
Latency quantiles come from the histogram buckets, interpolated within a bucket as
Prometheus' ``histogram_quantile`` does.
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

LATENCY = "rtvi_consumer_capture_to_prediction_seconds"


@dataclass
class PodMetrics:
    pod: str
    source: str  # "metrics" or "log"
    processed: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0
    consumed: int = 0
    buffered: int = 0
    in_flight: int = 0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    streams: dict[str, dict[str, int]] = field(default_factory=dict)  # stream -> outcome -> frames
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None

    @property
    def done(self) -> int:
        """Frames finished one way or another: predicted, failed or dropped."""
        return self.processed + self.failed + self.dropped

    def quantile_ms(self, q: float) -> float | None:
        """The q-quantile (0..1) of capture-to-prediction: exact from a log, else from the buckets."""
        exact = {0.5: self.p50_ms, 0.95: self.p95_ms, 0.99: self.p99_ms}.get(q)
        if exact is not None:
            return exact
        seconds = histogram_quantile(q, self.buckets)
        return None if seconds is None else seconds * 1000


def from_prometheus(pod: str, text: str) -> PodMetrics:
    result = PodMetrics(pod, "metrics")
    counters = {
        "rtvi_consumer_frames_processed_total": "processed",
        "rtvi_consumer_frames_failed_total": "failed",
        "rtvi_consumer_frames_dropped_total": "dropped",
        "rtvi_consumer_inference_retries_total": "retries",
        "rtvi_consumer_frames_consumed_total": "consumed",
        "rtvi_consumer_buffered_frames": "buffered",
        "rtvi_consumer_in_flight_requests": "in_flight",
    }
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, value = sample.name, sample.value
            if name in counters:
                setattr(result, counters[name], getattr(result, counters[name]) + int(value))
            elif name == f"{LATENCY}_bucket":
                result.buckets[float(sample.labels["le"])] = value
            elif name == "rtvi_consumer_stream_frames_total":
                outcomes = result.streams.setdefault(sample.labels["stream"], {})
                outcomes[sample.labels["outcome"]] = int(value)
    return result


def scrape(pod: str, url: str, timeout: float = 2.0) -> PodMetrics | None:
    """The consumer's metrics at ``url`` (…/metrics), or None while it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return from_prometheus(pod, response.read().decode())
    except OSError:
        return None


def healthy(url: str, timeout: float = 2.0) -> bool:
    """True when a health endpoint (…/livez, …/readyz) answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until(url: str, predicate: Callable[[PodMetrics], bool], timeout: float,
               alive: Callable[[], bool] = lambda: True) -> tuple[float, PodMetrics]:
    """Poll the consumer's metrics until ``predicate`` holds: (monotonic time, metrics then).

    Raises TimeoutError when ``timeout`` passes or ``alive()`` turns false first.
    """
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline and alive():
        last = scrape("consumer", url)
        if last is not None and predicate(last):
            return time.monotonic(), last
        time.sleep(0.05)
    raise TimeoutError(f"consumer metrics at {url} did not reach the expected state (last: {last})")


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile (0..1) of cumulative buckets, linear within the bucket, like PromQL."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] == 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            if count == previous_count:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (count - previous_count)
        previous_bound, previous_count = bound, count
    return previous_bound
