"""What `rtvi view` knows about each stream, from the frames and predictions topics.

Pure: no Kafka, no HTTP, no clock of its own (every call is given ``now``, in
monotonic seconds), so every rule here is unit-tested in-process.

The join. A prediction record names its frame by ``partition`` and ``offset`` on the
frames topic. Frames wait here (bytes as read: they are passed to the browser as they
are, never decoded) until their prediction arrives; a byte budget evicts the oldest when
the consumer lags far behind. The consumer publishes a stream's predictions in frame
order, so when the prediction of offset ``o`` arrives, every frame of that stream and
partition before ``o`` that is still waiting never got one: the consumer dropped it
(real-time mode) and it is counted as dropped. A prediction may also be read before its
frame (the two topics are fetched independently): it then waits for its frame instead.

The figures of a stream: processed fps and capture-to-prediction p50/p95 over the last
``window_s`` seconds, dropped and failed counts since the view started, staleness (no
prediction for ``stale_after_s``), the last error, and one point per second of
prediction time (p50, p95) for the latency chart.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

# Content types the browser is given for frame bytes; anything else is served as JPEG
# (the wire format's default), never as a type a browser would execute.
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})
# Frames of one stream remembered by offset alone (after their bytes were evicted), to
# count them as dropped when a later prediction passes them.
MAX_WAITING_PER_STREAM = 4096


@dataclass(frozen=True)
class Frame:
    """One record of the frames topic, its encoded image untouched."""

    stream: str
    partition: int
    offset: int
    frame: int
    content_type: str
    data: bytes

    @property
    def key(self) -> tuple[int, int]:
        return self.partition, self.offset


@dataclass(frozen=True)
class Label:
    label: str
    score: float


@dataclass(frozen=True)
class Prediction:
    """One record of the predictions topic (``rtvi.streaming.frames.prediction_record``)."""

    stream: str
    partition: int
    offset: int
    frame: int
    predicted_ns: int
    top: tuple[Label, ...] = ()
    error: str | None = None
    latency_ms: float | None = None

    @property
    def key(self) -> tuple[int, int]:
        return self.partition, self.offset

    @classmethod
    def from_json(cls, value: bytes) -> Prediction:
        """Parse a record; ValueError (with what is wrong) for anything that is not one."""
        try:
            record = json.loads(value)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            latency = (record.get("latency_ms") or {}).get("capture_to_prediction")
            error = record.get("error")
            top = () if error is not None else tuple(
                Label(str(item["label"]), float(item["score"])) for item in record.get("top") or ())
            prediction = cls(
                stream=str(record["stream"]), partition=int(record["partition"]), offset=int(record["offset"]),
                frame=int(record.get("frame", -1)), predicted_ns=int(record.get("predicted_ns", 0)), top=top,
                error=None if error is None else str(error),
                latency_ms=None if latency is None else float(latency),
            )
        except (KeyError, TypeError, AttributeError, OverflowError) as exc:
            raise ValueError(f"not a prediction record ({type(exc).__name__}: {exc})") from None
        if prediction.latency_ms is not None and not math.isfinite(prediction.latency_ms):
            raise ValueError("not a prediction record (latency is not a finite number)")
        return prediction


@dataclass(frozen=True)
class Picture:
    """The latest classified frame of a stream and the labels drawn over it."""

    frame: int
    content_type: str
    data: bytes
    top: tuple[Label, ...]


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass
class _LatencySecond:
    """Capture-to-prediction latencies of one second of prediction time."""

    second: int
    samples: list[float] = field(default_factory=list)

    def point(self) -> tuple[int, float, float]:
        ordered = sorted(self.samples)
        return self.second, percentile(ordered, 50), percentile(ordered, 95)  # type: ignore[return-value]


class StreamState:
    """One stream's figures; changed only through :class:`ViewState`."""

    def __init__(self, stream: str, now: float, history_points: int) -> None:
        self.stream = stream
        self.first_seen = now
        self.last_prediction_at: float | None = None
        self.latest: Prediction | None = None  # the latest record, success or error
        self.classified: Prediction | None = None  # the latest successful one
        self.picture: Picture | None = None
        self.picture_version = 0
        self.last_error: Prediction | None = None
        self.processed = 0
        self.failed = 0
        self.dropped = 0
        self.duplicates = 0
        self.waiting: OrderedDict[tuple[int, int], None] = OrderedDict()  # frames seen, no prediction yet
        self.awaited: Prediction | None = None  # a prediction read before its frame
        self.recent: deque[tuple[float, int, float | None]] = deque()  # (received, predicted_ns, latency_ms)
        self.history: deque[tuple[int, float, float]] = deque(maxlen=history_points)
        self.open_second: _LatencySecond | None = None  # the second of prediction time still filling

    def passed(self, key: tuple[int, int]) -> bool:
        """True when a prediction at or after ``key`` (same partition) was seen already."""
        return self.latest is not None and self.latest.partition == key[0] and key[1] <= self.latest.offset

    def record_latency(self, prediction: Prediction) -> None:
        if prediction.latency_ms is None:
            return
        second = prediction.predicted_ns // 1_000_000_000
        if self.open_second is None or second > self.open_second.second:
            if self.open_second is not None:
                self.history.append(self.open_second.point())
            self.open_second = _LatencySecond(second)
        self.open_second.samples.append(prediction.latency_ms)


@dataclass(frozen=True)
class Summary:
    """A stream's state as `GET /api/streams` and the page show it."""

    stream: str
    label: str | None
    score: float | None
    top: tuple[Label, ...]
    frame: int | None
    fps: float
    p50_ms: float | None
    p95_ms: float | None
    processed: int
    dropped: int
    failed: int
    stale: bool
    seconds_since_prediction: float | None
    failing: bool
    error: str | None
    error_frame: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream, "label": self.label, "score": self.score,
            "top": [{"label": item.label, "score": item.score} for item in self.top], "frame": self.frame,
            "fps": self.fps, "p50_ms": self.p50_ms, "p95_ms": self.p95_ms, "processed": self.processed,
            "dropped": self.dropped, "failed": self.failed, "stale": self.stale,
            "seconds_since_prediction": self.seconds_since_prediction, "failing": self.failing,
            "error": self.error, "error_frame": self.error_frame,
        }


class ViewState:
    """Every stream's state, fed frame by frame and prediction by prediction."""

    def __init__(self, *, stale_after_s: float = 5.0, window_s: float = 10.0, history_s: int = 300,
                 frame_budget_bytes: int = 64 * 1024 * 1024, max_streams: int = 256) -> None:
        self.stale_after_s = stale_after_s
        self.window_s = window_s
        self.history_s = history_s
        self.frame_budget_bytes = frame_budget_bytes
        self.max_streams = max_streams
        self.streams: dict[str, StreamState] = {}
        self.ignored_records = 0
        self._frames: OrderedDict[tuple[int, int], Frame] = OrderedDict()  # waiting for a prediction, oldest first
        self._frame_bytes = 0

    @property
    def buffered_bytes(self) -> int:
        return self._frame_bytes

    def _stream(self, stream: str, now: float) -> StreamState | None:
        state = self.streams.get(stream)
        if state is None:
            if len(self.streams) >= self.max_streams:
                self.ignored_records += 1
                return None
            state = self.streams[stream] = StreamState(stream, now, self.history_s)
        return state

    # --- input -------------------------------------------------------------------------------
    def add_frame(self, frame: Frame, now: float) -> None:
        state = self._stream(frame.stream, now)
        if state is None:
            return
        awaited = state.awaited
        if awaited is not None and awaited.key == frame.key:
            state.awaited = None
            self._show(state, frame, awaited)
            return
        if state.passed(frame.key):
            # Its stream's predictions are past it already: it never got (or will get) one.
            state.dropped += 1
            return
        state.waiting[frame.key] = None
        if len(state.waiting) > MAX_WAITING_PER_STREAM:
            self._frames_pop(state.waiting.popitem(last=False)[0])
        self._frames[frame.key] = frame
        self._frame_bytes += len(frame.data)
        while self._frame_bytes > self.frame_budget_bytes and self._frames:
            _, evicted = self._frames.popitem(last=False)  # its offset stays in `waiting`
            self._frame_bytes -= len(evicted.data)

    def add_prediction(self, prediction: Prediction, now: float) -> None:
        state = self._stream(prediction.stream, now)
        if state is None:
            return
        if state.passed(prediction.key):
            state.duplicates += 1  # re-published after a consumer restart (at-least-once)
            return
        # Frames of this partition the stream's predictions have now passed were dropped.
        while state.waiting:
            key = next(iter(state.waiting))
            if key[0] != prediction.partition or key[1] >= prediction.offset:
                break
            del state.waiting[key]
            self._frames_pop(key)
            state.dropped += 1
        seen = prediction.key in state.waiting
        state.waiting.pop(prediction.key, None)
        frame = self._frames_pop(prediction.key)
        state.latest = prediction
        state.last_prediction_at = now
        if prediction.error is not None:
            state.failed += 1
            state.last_error = prediction
            return
        state.processed += 1
        state.classified = prediction
        state.recent.append((now, prediction.predicted_ns, prediction.latency_ms))
        self._forget_old(state, now)
        state.record_latency(prediction)
        if frame is not None:
            self._show(state, frame, prediction)
        elif not seen:
            state.awaited = prediction  # read before its frame: join it when the frame comes

    def _frames_pop(self, key: tuple[int, int]) -> Frame | None:
        frame = self._frames.pop(key, None)
        if frame is not None:
            self._frame_bytes -= len(frame.data)
        return frame

    @staticmethod
    def _show(state: StreamState, frame: Frame, prediction: Prediction) -> None:
        content_type = frame.content_type if frame.content_type in IMAGE_TYPES else "image/jpeg"
        state.picture = Picture(prediction.frame, content_type, frame.data, prediction.top)
        state.picture_version += 1

    # --- output ------------------------------------------------------------------------------
    def _forget_old(self, state: StreamState, now: float) -> None:
        while state.recent and state.recent[0][0] < now - self.window_s:
            state.recent.popleft()

    def summary(self, stream: str, now: float) -> Summary:
        state = self.streams[stream]
        self._forget_old(state, now)
        recent = list(state.recent)
        latencies = sorted(latency for _, _, latency in recent if latency is not None)
        fps = 0.0
        if len(recent) >= 2:
            span_s = (recent[-1][1] - recent[0][1]) / 1e9
            # Over the prediction times the records carry, so bursts of the view's reads
            # do not show as rate changes; and never more than the window has room for.
            fps = (len(recent) - 1) / span_s if span_s > 0 else 0.0
            fps = min(fps, len(recent) / max(min(self.window_s, now - state.first_seen), 1e-3))
        since = None if state.last_prediction_at is None else now - state.last_prediction_at
        stale = (since if since is not None else now - state.first_seen) > self.stale_after_s
        top = state.classified.top if state.classified else ()
        failing = state.latest is not None and state.latest.error is not None
        return Summary(
            stream=stream, label=top[0].label if top else None, score=top[0].score if top else None, top=top,
            frame=state.classified.frame if state.classified else None, fps=round(fps, 2),
            p50_ms=percentile(latencies, 50), p95_ms=percentile(latencies, 95),
            processed=state.processed, dropped=state.dropped, failed=state.failed, stale=stale,
            seconds_since_prediction=None if since is None else round(since, 1), failing=failing,
            error=state.last_error.error if state.last_error else None,
            error_frame=state.last_error.frame if state.last_error else None,
        )

    def summaries(self, now: float) -> list[Summary]:
        return [self.summary(stream, now) for stream in sorted(self.streams)]

    def history(self, stream: str) -> list[tuple[int, float, float]]:
        """(second of prediction time, p50 ms, p95 ms), oldest first; the last point is the
        second still filling (a client replaces a point of the same second)."""
        state = self.streams[stream]
        points = list(state.history)
        if state.open_second is not None:
            points.append(state.open_second.point())
        return points
