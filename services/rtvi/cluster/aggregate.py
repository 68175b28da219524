"""One load-test summary from many consumer pods' metrics.

Each pod is read from its Prometheus endpoint (through the API server's pod proxy):
counters add up exactly, and latency percentiles come from the merged histogram
buckets, interpolated within a bucket as Prometheus' ``histogram_quantile`` does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rtvi.streaming.probe import PodMetrics, histogram_quantile


@dataclass
class Summary:
    pods: list[str]
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
            f"consumer pods:      {len(self.pods)} ({', '.join(self.pods)})",
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
    quantiles = [histogram_quantile(q, merged) for q in (0.5, 0.95, 0.99)]
    p50, p95, p99 = (None if v is None else v * 1000 for v in quantiles)
    return Summary(
        pods=[p.pod for p in pods],
        frames=frames,
        failed=sum(p.failed for p in pods),
        dropped=sum(p.dropped for p in pods),
        retries=sum(p.retries for p in pods),
        throughput_fps=frames / seconds if seconds else None,
        p50_ms=p50, p95_ms=p95, p99_ms=p99,
    )
