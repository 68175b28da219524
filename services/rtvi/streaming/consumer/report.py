"""The periodic metrics block in the consumer's log: what `kubectl logs` readers see.

It is rendered from the consumer's Prometheus metrics (``outcomes`` counts every figure
there, once), so the block, ``/metrics`` and everything that reads ``/metrics`` agree.
It is for people: nothing parses it back. Latency percentiles come from the histogram
buckets, as ``histogram_quantile`` would compute them in Prometheus.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client.samples import Sample

from rtvi.streaming.consumer import metrics as names
from rtvi.streaming.consumer.metrics import ConsumerMetrics
from rtvi.streaming.probe import PodMetrics, from_samples, sample_sum

BEGIN = "=== rtvi consumer metrics ==="
END = "=== end rtvi consumer metrics ==="
STREAMS_SHOWN = 20

# Why frames are dropped in real-time mode, with the block's words for each.
DROP_REASONS = {
    "stale": "stale on read",  # already older than the maximum age when read from Kafka
    "expired": "expired in buffer",  # aged past it while waiting, judged when it would be sent
    "overflow": "overflow",  # more waited than one round of calls takes: the longest stream's oldest went
}


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _stream_lines(figures: PodMetrics) -> list[str]:
    def outcome(stream: str, name: str) -> int:
        return figures.streams[stream].get(name, 0)

    busiest = sorted(figures.streams, key=lambda s: (-outcome(s, "processed") - outcome(s, "dropped"), s))
    lines = [f"  {s}: {outcome(s, 'processed')} / {outcome(s, 'dropped')} / {outcome(s, 'failed')}"
             for s in busiest[:STREAMS_SHOWN]]
    if len(busiest) > STREAMS_SHOWN:
        lines.append(f"  ... and {len(busiest) - STREAMS_SHOWN} more streams")
    return lines


def snapshot(metrics: ConsumerMetrics) -> list[Sample]:
    """Every sample of a consumer's registry, read once."""
    return [s for family in metrics.registry.collect() for s in family.samples]


def render(samples: Sequence[Sample], elapsed: float, max_frame_age_ms: float) -> str:
    """The block from one snapshot of a consumer's samples (its registry, or its /metrics scraped);
    ``elapsed`` is the seconds since its first frame."""
    figures = from_samples("consumer", samples)
    busy = sample_sum(samples, names.BUSY_SECONDS)
    latency_count = sample_sum(samples, f"{names.LATENCY}_count")
    latency_sum = sample_sum(samples, f"{names.LATENCY}_sum")
    calls = sample_sum(samples, f"{names.INFERENCE_SECONDS}_count")
    calls_sum = sample_sum(samples, f"{names.INFERENCE_SECONDS}_sum")
    attempted = figures.processed + figures.failed
    dropped = {reason: sample_sum(samples, names.DROPPED, reason=reason) for reason in DROP_REASONS}
    lines = [
        BEGIN,
        "THROUGHPUT",
        f"  frames consumed: {figures.consumed}",
        f"  frames processed: {figures.processed}",
        f"  elapsed s: {elapsed:.1f}",
        f"  overall fps: {figures.processed / elapsed if elapsed else 0.0:.2f}",
        f"  effective fps: {figures.processed / busy if busy else 0.0:.2f}",
        "PROCESSING TIME (capture to prediction, ms; percentiles from the histogram buckets)",
        f"  average: {_ms(latency_sum / latency_count if latency_count else None)}",
        f"  p50: {_ms(figures.quantile(0.5))}",
        f"  p95: {_ms(figures.quantile(0.95))}",
        f"  p99: {_ms(figures.quantile(0.99))}",
        f"  inference round trip average: {_ms(calls_sum / calls if calls else None)}",
        "ERRORS",
        f"  total: {figures.failed}",
        f"  rate: {100.0 * figures.failed / attempted if attempted else 0.0:.2f}%",
        f"  retries: {figures.retries}",
        "DROPPED (" + (f"real time: frames older than {max_frame_age_ms:g} ms are skipped)"
                       if max_frame_age_ms else "keep-all mode: nothing is dropped)"),
        f"  total: {figures.dropped}",
        *(f"  {label}: {int(dropped[reason])}" for reason, label in DROP_REASONS.items()),
        "STREAMS (processed / dropped / failed)",
        *_stream_lines(figures),
        END,
    ]
    return "\n".join(lines)
