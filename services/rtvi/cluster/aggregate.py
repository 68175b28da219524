"""One load-test summary from many consumer pods.

Each pod is read from its Prometheus endpoint when reachable (counters add up exactly;
latency percentiles come from the merged histogram buckets, interpolated within a
bucket as Prometheus' histogram_quantile does), else from the last metrics block in its
log (exact per pod; across pods the percentiles reported are the highest pod's, an
upper bound, since percentiles cannot be merged).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from rtvi.streaming.report import parse_summary

LATENCY = "rtvi_consumer_capture_to_prediction_seconds"


@dataclass
class PodMetrics:
    pod: str
    source: str  # "metrics" or "log"
    processed: int = 0
    failed: int = 0
    dropped: int = 0
    retries: int = 0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None

    @property
    def done(self) -> int:
        """Frames finished one way or another: predicted, failed or dropped."""
        return self.processed + self.failed + self.dropped


def _number(text: str) -> float:
    return float(text.rstrip("%"))


def from_prometheus(pod: str, text: str) -> PodMetrics:
    result = PodMetrics(pod, "metrics")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, value = sample.name, sample.value
            if name == "rtvi_consumer_frames_processed_total":
                result.processed += int(value)
            elif name == "rtvi_consumer_frames_failed_total":
                result.failed += int(value)
            elif name == "rtvi_consumer_frames_dropped_total":
                result.dropped += int(value)
            elif name == "rtvi_consumer_inference_retries_total":
                result.retries += int(value)
            elif name == f"{LATENCY}_bucket":
                result.buckets[float(sample.labels["le"])] = value
    return result


def from_log(pod: str, log: str) -> PodMetrics | None:
    blocks = parse_summary(log)
    if not blocks:
        return None
    last = blocks[-1]
    section = "PROCESSING TIME"
    return PodMetrics(
        pod, "log",
        processed=int(_number(last["THROUGHPUT.frames processed"])),
        failed=int(_number(last["ERRORS.total"])),
        dropped=int(_number(last["DROPPED.stale frames"])),
        retries=int(_number(last["ERRORS.retries"])),
        p50_ms=_number(last[f"{section}.p50"]),
        p95_ms=_number(last[f"{section}.p95"]),
        p99_ms=_number(last[f"{section}.p99"]),
    )


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


@dataclass
class Summary:
    pods: int
    sources: dict[str, str]
    frames: int
    failed: int
    dropped: int
    retries: int
    throughput_fps: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    hpa_replicas: dict[str, int] | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def render(self) -> str:
        def ms(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.1f}"

        lines = [
            f"consumer pods:      {self.pods} ({', '.join(f'{p}: {s}' for p, s in self.sources.items())})",
            f"frames processed:   {self.frames}",
            f"throughput:         {'n/a' if self.throughput_fps is None else f'{self.throughput_fps:.1f}'} frames/s",
            f"capture->prediction p50 / p95 / p99 ms: {ms(self.p50_ms)} / {ms(self.p95_ms)} / {ms(self.p99_ms)}",
            f"errors:             {self.failed} ({self.retries} retries)",
            f"dropped (stale):    {self.dropped}",
        ]
        if self.hpa_replicas:
            lines.append(f"inference replicas: min {self.hpa_replicas['min']}, max {self.hpa_replicas['max']} (HPA)")
        return "\n".join(lines)


def aggregate(pods: list[PodMetrics], seconds: float | None = None) -> Summary:
    merged: dict[float, float] = {}
    for pod in pods:
        for bound, count in pod.buckets.items():
            merged[bound] = merged.get(bound, 0.0) + count
    frames = sum(p.processed for p in pods)
    if pods and all(p.source == "metrics" for p in pods):
        quantiles = [histogram_quantile(q, merged) for q in (0.5, 0.95, 0.99)]
        p50, p95, p99 = (None if v is None else v * 1000 for v in quantiles)
    else:
        def worst(attr: str) -> float | None:
            values = [getattr(p, attr) for p in pods if getattr(p, attr) is not None]
            return max(values) if values else None

        p50, p95, p99 = worst("p50_ms"), worst("p95_ms"), worst("p99_ms")
    return Summary(
        pods=len(pods),
        sources={p.pod: p.source for p in pods},
        frames=frames,
        failed=sum(p.failed for p in pods),
        dropped=sum(p.dropped for p in pods),
        retries=sum(p.retries for p in pods),
        throughput_fps=frames / seconds if seconds else None,
        p50_ms=p50, p95_ms=p95, p99_ms=p99,
    )
