"""The wire format of frames and predictions on Kafka.

A frame is the raw encoded image as the record value (no base64, no JSON), keyed by
stream id, described by headers. A prediction is one JSON record per frame on the
predictions topic, keyed by the same stream id; a frame that could not be
classified gets a record with an ``error`` instead of ``top``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

H_STREAM = "rtvi-stream"
H_FRAME = "rtvi-frame"
H_CAPTURE_NS = "rtvi-capture-ns"
H_CONTENT_TYPE = "content-type"
H_WIDTH = "rtvi-width"
H_HEIGHT = "rtvi-height"


@dataclass(frozen=True)
class FrameInfo:
    stream: str
    frame: int
    capture_ns: int
    content_type: str = "image/jpeg"
    width: int = 0
    height: int = 0

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (H_STREAM, self.stream.encode()),
            (H_FRAME, str(self.frame).encode()),
            (H_CAPTURE_NS, str(self.capture_ns).encode()),
            (H_CONTENT_TYPE, self.content_type.encode()),
            (H_WIDTH, str(self.width).encode()),
            (H_HEIGHT, str(self.height).encode()),
        ]

    @classmethod
    def from_record(cls, headers: list[tuple[str, bytes]] | None, key: bytes | None) -> FrameInfo:
        """Read the headers; a frame without them still gets a (best-effort) identity."""
        values = {name: value for name, value in (headers or []) if value is not None}

        def number(name: str) -> int:
            missing = -1 if name != H_WIDTH and name != H_HEIGHT else 0
            try:
                value = int(values[name])
            except (KeyError, ValueError):
                return missing
            # Kafka headers are anyone's bytes: a 400-digit capture time would overflow
            # every float computed from it and stop the consumer on one poison record.
            return value if -(2**63) <= value < 2**63 else missing

        stream = values.get(H_STREAM, key or b"").decode(errors="replace")
        return cls(
            stream=stream,
            frame=number(H_FRAME),
            capture_ns=number(H_CAPTURE_NS),
            content_type=values.get(H_CONTENT_TYPE, b"image/jpeg").decode(errors="replace"),
            width=number(H_WIDTH),
            height=number(H_HEIGHT),
        )

    def age_ms(self, now_ns: int | None = None) -> float | None:
        if self.capture_ns <= 0:
            return None
        return ((now_ns or time.time_ns()) - self.capture_ns) / 1e6


def prediction_record(
    info: FrameInfo, *, model: str, top: list[dict[str, Any]] | None = None, error: str | None = None,
    inference_ms: float | None = None, source: tuple[int, int] | None = None,
) -> bytes:
    """The JSON value of one prediction (or error) record."""
    now_ns = time.time_ns()
    record: dict[str, Any] = {
        "stream": info.stream,
        "frame": info.frame,
        "capture_ns": info.capture_ns,
        "predicted_ns": now_ns,
        "model": model,
    }
    if error is None:
        record["top"] = top or []
    else:
        record["error"] = error
    record["latency_ms"] = {
        "inference": None if inference_ms is None else round(inference_ms, 3),
        "capture_to_prediction": None if info.capture_ns <= 0 else round((now_ns - info.capture_ns) / 1e6, 3),
    }
    if source is not None:
        record["partition"], record["offset"] = source
    return json.dumps(record, separators=(",", ":")).encode()
