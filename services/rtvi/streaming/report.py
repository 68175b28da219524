"""The periodic metrics block in the consumer's log: what `kubectl logs` readers see.

The block is plain ``key: value`` lines under fixed section titles so that people can
read it and `rtvi loadtest` can parse it back (see ``parse_summary``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

BEGIN = "=== rtvi consumer metrics ==="
END = "=== end rtvi consumer metrics ==="
RESERVOIR = 20_000


@dataclass
class LatencyStats:
    """Capture-to-prediction latencies: all-time average/min/max, recent window, percentiles."""

    count: int = 0
    total: float = 0.0
    minimum: float = math.inf
    maximum: float = 0.0
    recent: deque = field(default_factory=lambda: deque(maxlen=100))
    window: deque = field(default_factory=lambda: deque(maxlen=RESERVOIR))

    def add(self, ms: float) -> None:
        self.count += 1
        self.total += ms
        self.minimum = min(self.minimum, ms)
        self.maximum = max(self.maximum, ms)
        self.recent.append(ms)
        self.window.append(ms)

    def percentile(self, q: float) -> float:
        if not self.window:
            return 0.0
        ordered = sorted(self.window)
        rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
        return ordered[rank]


# Why frames are dropped in real-time mode, with the block's words for each.
DROP_REASONS = {
    "stale": "stale on read",  # already older than the maximum age when read from Kafka
    "expired": "expired in buffer",  # aged past it while waiting, judged when it would be sent
    "overflow": "overflow",  # more waited than one round of calls takes: the longest stream's oldest went
}
STREAMS_SHOWN = 20


@dataclass
class StreamCounts:
    processed: int = 0
    dropped: int = 0
    failed: int = 0


@dataclass
class ConsumerReport:
    """Counters the block is made of, updated by the consumer as it works."""

    consumed: int = 0
    processed: int = 0
    failed: int = 0
    retries: int = 0
    max_frame_age_ms: float = 0.0
    dropped_by_reason: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    streams: dict[str, StreamCounts] = field(default_factory=dict)
    started: float | None = None  # when the first frame arrived: idle time before it is not "slow"
    busy_seconds: float = 0.0
    latency: LatencyStats = field(default_factory=LatencyStats)
    inference: LatencyStats = field(default_factory=LatencyStats)

    @property
    def dropped(self) -> int:
        return sum(self.dropped_by_reason.values())

    def stream(self, stream: str) -> StreamCounts:
        counts = self.streams.get(stream)
        if counts is None:
            counts = self.streams[stream] = StreamCounts()
        return counts

    def _stream_lines(self) -> list[str]:
        busiest = sorted(self.streams.items(), key=lambda kv: (-kv[1].processed - kv[1].dropped, kv[0]))
        lines = [f"  {name}: {c.processed} / {c.dropped} / {c.failed}" for name, c in busiest[:STREAMS_SHOWN]]
        if len(busiest) > STREAMS_SHOWN:
            lines.append(f"  ... and {len(busiest) - STREAMS_SHOWN} more streams")
        return lines

    def render(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9) if self.started is not None else 0.0
        lat = self.latency
        average = lat.total / lat.count if lat.count else 0.0
        recent = sum(lat.recent) / len(lat.recent) if lat.recent else 0.0
        minimum = lat.minimum if lat.count else 0.0
        attempted = self.processed + self.failed
        lines = [
            BEGIN,
            "THROUGHPUT",
            f"  frames consumed: {self.consumed}",
            f"  frames processed: {self.processed}",
            f"  elapsed s: {elapsed:.1f}",
            f"  overall fps: {self.processed / elapsed if elapsed else 0.0:.2f}",
            f"  effective fps: {self.processed / self.busy_seconds if self.busy_seconds else 0.0:.2f}",
            "PROCESSING TIME (capture to prediction, ms)",
            f"  average: {average:.1f}",
            f"  recent average (last {len(lat.recent)}): {recent:.1f}",
            f"  min-max: {minimum:.1f}-{lat.maximum:.1f}",
            f"  p50: {lat.percentile(50):.1f}",
            f"  p95: {lat.percentile(95):.1f}",
            f"  p99: {lat.percentile(99):.1f}",
            f"  inference round trip average: {self.inference.total / self.inference.count if self.inference.count else 0.0:.1f}",
            "ERRORS",
            f"  total: {self.failed}",
            f"  rate: {100.0 * self.failed / attempted if attempted else 0.0:.2f}%",
            f"  retries: {self.retries}",
            "DROPPED (" + (f"real time: frames older than {self.max_frame_age_ms:g} ms are skipped)"
                           if self.max_frame_age_ms else "keep-all mode: nothing is dropped)"),
            f"  total: {self.dropped}",
            *(f"  {label}: {self.dropped_by_reason[reason]}" for reason, label in DROP_REASONS.items()),
            "STREAMS (processed / dropped / failed)",
            *self._stream_lines(),
            END,
        ]
        return "\n".join(lines)


def parse_summary(text: str) -> list[dict[str, str]]:
    """Every metrics block in ``text`` (a log), as {"SECTION.key": "value"} dicts."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    section = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.endswith(BEGIN):
            current, section = {}, ""
        elif line.endswith(END) and current is not None:
            blocks.append(current)
            current = None
        elif current is not None:
            if not line.startswith("  "):
                section = line.strip().split(" (")[0]
            elif ": " in line:
                key, value = line.strip().split(": ", 1)
                current[f"{section}.{key.split(' (')[0]}"] = value
    return blocks
