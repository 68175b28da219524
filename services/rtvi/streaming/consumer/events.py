"""Label-change events: what systems downstream want instead of a record per frame. Pure.

A stream's label changes when a new top-1 label has held for ``min_frames`` consecutive
predictions, each scoring at least ``min_score``; one event says so, with the old and new
label and the first and last frame (and capture times) of the run that made the change.
A prediction below ``min_score``, or of yet another label, starts the run over, so a label
flickering for a frame or two never makes an event. A stream that sends no prediction for
``silence_s`` makes a ``stream_silent`` event, and its next prediction ``stream_resumed``.

The tracker's state lives in the consumer that owns the stream's partition: after a
rebalance the new owner starts afresh (its first event for the stream has ``previous``
null), which at-least-once consumers downstream must take in their stride anyway.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

LABEL_CHANGED = "label_changed"
STREAM_SILENT = "stream_silent"
STREAM_RESUMED = "stream_resumed"


@dataclass
class _Seen:
    """One prediction's place in its stream."""

    frame: int
    capture_ns: int


@dataclass
class _Stream:
    label: str | None = None  # the label that last held, None before the first did
    candidate: str | None = None
    run: int = 0
    first: _Seen | None = None
    last_seen_ns: int = 0  # when its last prediction was observed (the tracker's clock)
    last: _Seen | None = None
    silent: bool = False


@dataclass
class LabelEvents:
    """Turns each stream's predictions, in frame order, into events (JSON-ready dicts)."""

    min_frames: int = 3
    min_score: float = float("-inf")
    silence_s: float = 10.0
    streams: dict[str, _Stream] = field(default_factory=dict)

    def observe(self, stream: str, frame: int, capture_ns: int, label: str, score: float,
                now_ns: int | None = None) -> list[dict[str, Any]]:
        """A stream's next prediction (its top-1): the events it makes, if any."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        state = self.streams.setdefault(stream, _Stream())
        seen = _Seen(frame, capture_ns)
        events = []
        if state.silent:
            events.append({"type": STREAM_RESUMED, "stream": stream, "frame": frame, "capture_ns": capture_ns,
                           "silent_s": round((now_ns - state.last_seen_ns) / 1e9, 3)})
            state.silent = False
        state.last_seen_ns, state.last = now_ns, seen
        if score < self.min_score or label == state.label:
            state.candidate, state.run, state.first = None, 0, None
            return events
        if label != state.candidate:
            state.candidate, state.run, state.first = label, 0, seen
        state.run += 1
        if state.run >= self.min_frames:
            assert state.first is not None
            events.append({
                "type": LABEL_CHANGED, "stream": stream, "previous": state.label, "label": label, "score": score,
                "frames": state.run, "first_frame": state.first.frame, "first_capture_ns": state.first.capture_ns,
                "last_frame": frame, "last_capture_ns": capture_ns,
            })
            state.label, state.candidate, state.run, state.first = label, None, 0, None
        return events

    def silences(self, now_ns: int | None = None) -> list[dict[str, Any]]:
        """``stream_silent`` for each stream that went quiet for ``silence_s`` since its last prediction."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        events = []
        for stream, state in self.streams.items():
            if not state.silent and state.last is not None and now_ns - state.last_seen_ns >= self.silence_s * 1e9:
                state.silent = True
                events.append({"type": STREAM_SILENT, "stream": stream, "last_frame": state.last.frame,
                               "last_capture_ns": state.last.capture_ns, "silence_s": self.silence_s})
        return events

    def forget(self, streams: set[str]) -> None:
        """Streams whose partition went to another consumer: their state is theirs now."""
        for stream in streams:
            self.streams.pop(stream, None)


def event_record(event: dict[str, Any], model: str) -> bytes:
    """The JSON value of one event record (keyed by stream on the events topic)."""
    return json.dumps({**event, "model": model, "emitted_ns": time.time_ns()}, separators=(",", ":")).encode()
