"""What `rtvi up` says while it runs and how it judges the run, from the consumer's metrics."""

from __future__ import annotations

from dataclasses import dataclass

from rtvi.errors import BoundMissed, ExitCode, RtviError, WorkFailed
from rtvi.streaming.probe import PodMetrics


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
    """The line that explains a run, and the error it ends with (None: the run passed)."""

    line: str
    error: type[RtviError] | None = None

    @property
    def code(self) -> ExitCode:
        return ExitCode.OK if self.error is None else self.error.exit_code

    def conclude(self) -> ExitCode:
        """ExitCode.OK, or raise the verdict's error with its line."""
        if self.error is not None:
            raise self.error(self.line)
        return ExitCode.OK


def judge(final: PodMetrics | None, max_p95_ms: float) -> Verdict:
    """Passed: frames predicted, none failed, within the latency bound (if set); failed work:
    failures or nothing predicted; bound missed: the p95 latency bound was missed."""
    if final is None:
        return Verdict("the consumer's metrics could not be read", WorkFailed)
    if final.failed:
        return Verdict(f"{final.failed} frames failed (see the consumer's log)", WorkFailed)
    if not final.processed:
        return Verdict("no frame was predicted", WorkFailed)
    p95 = final.quantile_ms(0.95)
    counts = f"{final.processed} frames predicted, {final.dropped} dropped, 0 failed"
    if not max_p95_ms:
        return Verdict(f"{counts}; p95 {_ms(p95)} ms (no latency bound set)")
    met = p95 is not None and p95 <= max_p95_ms
    return Verdict(
        f"{counts}; latency bound {'met' if met else 'MISSED'}: p95 {_ms(p95)} ms {'<=' if met else '>'} "
        f"{max_p95_ms:g} ms (from the consumer's histogram)",
        None if met else BoundMissed,
    )
