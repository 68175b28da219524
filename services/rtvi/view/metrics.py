"""Prometheus metrics of `rtvi view` (served on its own port at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

RECORDS = Counter(
    "rtvi_view_records_total",
    "Records read, by topic (frames, predictions) and outcome (ok; invalid: not a prediction record; "
    "ignored: a stream beyond --max-streams)",
    ["topic", "outcome"],
)
STREAMS = Gauge("rtvi_view_streams", "Streams shown")
CLIENTS = Gauge("rtvi_view_clients", "Browsers connected for live updates")
UPDATES = Counter("rtvi_view_updates_sent_total",
                  "Tile updates pushed to browsers, by whether they carried a new image", ["image"])
BUFFERED_BYTES = Gauge("rtvi_view_buffered_frame_bytes", "Bytes of frames held until their prediction arrives")
