"""`rtvi ingest`'s Prometheus metrics: per-camera health, named once here.

Series are per camera name (from configuration, so their number is bounded by the
fleet); a camera removed from the cameras file takes its series with it. URLs never
appear in a label.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CAMERA_UP = "rtvi_ingest_camera_up"
FRAMES = "rtvi_ingest_frames_total"
FRAMES_READ = "rtvi_ingest_frames_read_total"
RECONNECTS = "rtvi_ingest_reconnects_total"
ERRORS = "rtvi_ingest_errors_total"
LAST_FRAME_AGE = "rtvi_ingest_last_frame_age_seconds"
DECODE = "rtvi_ingest_decode_seconds"
PUBLISH = "rtvi_ingest_publish_seconds"
RELOADS = "rtvi_ingest_config_reloads_total"
BROKER_UP = "rtvi_ingest_broker_up"

# Outcomes of a decoded frame: published (the broker acknowledged it), skipped (a newer frame
# replaced it before it could be sent: the latest-frame policy), failed (encoding, size or delivery).
PUBLISHED, SKIPPED, FAILED = "published", "skipped", "failed"

camera_up = Gauge(CAMERA_UP, "1 while the camera delivers frames, 0 while it connects or reconnects", ["camera"])
frames = Counter(FRAMES, "Decoded frames by outcome: published, skipped (replaced by a newer one "
                 "before publishing), failed", ["camera", "outcome"])
frames_read = Counter(FRAMES_READ, "Frames read off the camera's stream (decoded or not)", ["camera"])
reconnects = Counter(RECONNECTS, "Connections given up and tried again (error, end of stream, stall, frozen)",
                     ["camera"])
errors = Counter(ERRORS, "Camera failures by reason: unreachable, timeout, auth, not_found, unsupported, "
                 "ended, stalled, frozen, failed", ["camera", "reason"])
last_frame_age = Gauge(LAST_FRAME_AGE, "Seconds since the camera's last frame was read", ["camera"])
decode_seconds = Histogram(DECODE, "CPU time of a camera's reader thread per frame: demux and decode, and for "
                           "a published frame its colour conversion", buckets=(
                               .0005, .001, .002, .004, .008, .016, .032, .064, .128, .256))
publish_seconds = Histogram(PUBLISH, "From handing a frame to the Kafka client to the broker's acknowledgement",
                            buckets=(.002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5))
reloads = Counter(RELOADS, "Re-readings of the cameras file that changed it, by result (applied, rejected)",
                  ["result"])
broker_up = Gauge(BROKER_UP, "1 while the Kafka client holds a connection to a broker")



def forget(camera: str, reasons: tuple[str, ...]) -> None:
    """Drop every series of a camera that left the configuration (``reasons``: every
    ``errors`` reason there is)."""
    series = [(m, (camera,)) for m in (camera_up, reconnects, last_frame_age, frames_read)]
    series += [(frames, (camera, outcome)) for outcome in (PUBLISHED, SKIPPED, FAILED)]
    series += [(errors, (camera, reason)) for reason in reasons]
    for metric, labels in series:
        try:
            metric.remove(*labels)
        except KeyError:  # never had that series
            pass
