"""What `rtvi up` says while it runs and how it judges the run, from the consumer's metrics."""

from __future__ import annotations

from dataclasses import dataclass

from rtvi.streaming.progress import PodMetrics


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def status_line(elapsed: float, previous: PodMetrics | None, current: PodMetrics, seconds: float) -> str:
    """One line: frames in and out (with their rates since the last line), latency, drops."""
    consumed_rate = (current.consumed - (previous.consumed if previous else 0)) / max(seconds, 1e-9)
    processed_rate = (current.processed - (previous.processed if previous else 0)) / max(seconds, 1e-9)
    return (
        f"{elapsed:4.0f}s  in {current.consumed} ({consumed_rate:.1f} fps)  out {current.processed} "
        f"({processed_rate:.1f} fps)  capture->prediction p50 {_ms(current.quantile_ms(0.5))} ms "
        f"p95 {_ms(current.quantile_ms(0.95))} ms  dropped {current.dropped}  failed {current.failed}"
    )


@dataclass(frozen=True)
class Verdict:
    """Exit code and the line that explains it."""

    code: int
    line: str


def judge(final: PodMetrics | None, max_p95_ms: float) -> Verdict:
    """0: frames predicted, none failed, within the latency bound (if set); 1: failures or
    nothing predicted; 3: the p95 latency bound was missed."""
    if final is None:
        return Verdict(1, "the consumer's metrics could not be read")
    if final.failed:
        return Verdict(1, f"{final.failed} frames failed (see the consumer's log)")
    if not final.processed:
        return Verdict(1, "no frame was predicted")
    p95 = final.quantile_ms(0.95)
    if not max_p95_ms:
        return Verdict(0, f"{final.processed} frames predicted, p95 {_ms(p95)} ms (no latency bound set)")
    met = p95 is not None and p95 <= max_p95_ms
    return Verdict(
        0 if met else 3,
        f"latency bound {'met' if met else 'MISSED'}: p95 {_ms(p95)} ms {'<=' if met else '>'} {max_p95_ms:g} ms "
        "(from the consumer's histogram)",
    )
