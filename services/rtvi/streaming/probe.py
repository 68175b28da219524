"""A consumer's figures and health, read from its HTTP endpoint as a probe reads them.

Shared by `rtvi up` (status lines, the verdict), `rtvi loadtest` (many pods summed), the
consumer's own log block (rendered from its registry) and the tests and benchmarks: every
one of them learns what a consumer did from its Prometheus metrics, never from log text.
Latency quantiles come from the histogram buckets, interpolated within a bucket as
Prometheus' ``histogram_quantile`` does.
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from rtvi.deadline import Deadline
from rtvi.streaming.consumer import metrics as names


@dataclass
class PodMetrics:
    """One consumer's counters, gauges and latency buckets."""

    pod: str
    processed: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0
    consumed: int = 0
    buffered: int = 0
    in_flight: int = 0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    round_trip_buckets: dict[float, float] = field(default_factory=dict)  # ModelInfer round trips, likewise
    streams: dict[str, dict[str, int]] = field(default_factory=dict)  # stream -> outcome -> frames
    retries_by_code: dict[str, int] = field(default_factory=dict)
    dropped_by_reason: dict[str, int] = field(default_factory=dict)
    partitions: dict[tuple[str, int], bool] = field(default_factory=dict)  # (topic, partition) -> owned now

    @property
    def done(self) -> int:
        """Frames finished one way or another: predicted, failed or dropped."""
        return self.processed + self.failed + self.dropped

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1) of capture-to-prediction in seconds, from the histogram buckets."""
        return histogram_quantile(q, self.buckets)

    def quantile_ms(self, q: float) -> float | None:
        seconds = self.quantile(q)
        return None if seconds is None else seconds * 1000

    def round_trip_ms(self, q: float) -> float | None:
        """The q-quantile (0..1) of the inference round trip in ms, from its histogram buckets."""
        seconds = histogram_quantile(q, self.round_trip_buckets)
        return None if seconds is None else seconds * 1000

    @property
    def owned_partitions(self) -> set[int]:
        return {partition for (_, partition), owned in self.partitions.items() if owned}


_COUNTS = {
    names.PROCESSED: "processed",
    names.FAILED: "failed",
    names.DROPPED: "dropped",
    names.RETRIES: "retries",
    names.CONSUMED: "consumed",
    names.BUFFERED: "buffered",
    names.IN_FLIGHT: "in_flight",
}


def from_samples(pod: str, samples: Iterable[Sample]) -> PodMetrics:
    result = PodMetrics(pod)
    for sample in samples:
        name, value, labels = sample.name, sample.value, sample.labels
        if name in _COUNTS:
            setattr(result, _COUNTS[name], getattr(result, _COUNTS[name]) + int(value))
            by_label = {names.RETRIES: (result.retries_by_code, "code"),
                        names.DROPPED: (result.dropped_by_reason, "reason")}.get(name)
            if by_label is not None:
                counts, label = by_label
                counts[labels[label]] = counts.get(labels[label], 0) + int(value)
        elif name == f"{names.LATENCY}_bucket":
            result.buckets[float(labels["le"])] = value
        elif name == f"{names.INFERENCE_SECONDS}_bucket":
            result.round_trip_buckets[float(labels["le"])] = value
        elif name == names.STREAM_FRAMES:
            result.streams.setdefault(labels["stream"], {})[labels["outcome"]] = int(value)
        elif name == names.ASSIGNED:
            result.partitions[(labels["topic"], int(labels["partition"]))] = value == 1
    return result


def parse(text: str) -> list[Sample]:
    """The samples of a /metrics text."""
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def from_prometheus(pod: str, text: str) -> PodMetrics:
    """A pod's figures from its /metrics text."""
    return from_samples(pod, parse(text))


def read_samples(url: str, timeout: float = 2.0) -> list[Sample] | None:
    """The samples at ``url`` (…/metrics), or None while nothing answers there."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return parse(response.read().decode())
    except OSError:
        return None


def scrape(pod: str, url: str, timeout: float = 2.0) -> PodMetrics | None:
    """The consumer's figures at ``url`` (…/metrics), or None while it does not answer."""
    samples = read_samples(url, timeout)
    return None if samples is None else from_samples(pod, samples)


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
    deadline = Deadline.from_timeout(timeout)
    last = None
    while not deadline.expired and alive():
        last = scrape("consumer", url)
        if last is not None and predicate(last):
            return time.monotonic(), last
        time.sleep(0.05)
    raise TimeoutError(f"consumer metrics at {url} did not reach the expected state (last: {last})")


# After the producer stops: how long a consumer must stay idle to count as caught up.
IDLE_S = 1.5


def wait_idle(url: str, timeout: float, alive: Callable[[], bool] = lambda: True,
              idle_s: float = IDLE_S) -> PodMetrics | None:
    """Once the producer stopped: wait until the consumer has read nothing new and holds
    nothing (buffered, in flight) for ``idle_s``; its metrics then (the last ones read if
    ``timeout`` passes or ``alive()`` turns false first; None if it never answered)."""
    deadline = Deadline.from_timeout(timeout)
    last: PodMetrics | None = None
    idle_since = time.monotonic()
    while alive() and not deadline.expired:
        current = scrape("consumer", url)
        if current is None or last is None or current.consumed != last.consumed or current.buffered or current.in_flight:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= idle_s:
            return current
        last = current if current is not None else last
        time.sleep(0.2)
    return last


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


def sample_sum(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())
