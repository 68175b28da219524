"""A network camera or stream by URL (RTSP, RTSPS, HTTP(S) MJPEG or HLS) through OpenCV's FFmpeg.

The pip OpenCV is built with FFmpeg, which speaks these protocols itself, so a URL needs
nothing but the right backend (``CAP_FFMPEG``: OpenCV's other backends would try the URL
as a file pattern and print it, credentials and all) and timeouts. FFmpeg's open and read
timeouts (``CAP_PROP_OPEN_TIMEOUT_MSEC``, ``CAP_PROP_READ_TIMEOUT_MSEC``) abort a blocking
connect or read, so a dead camera costs a reader seconds, not minutes. A failed open is
explained by :func:`rtvi.streaming.producer.sources.probe.diagnose`.

RTSP's transport is an FFmpeg option that OpenCV takes only from the environment
(``OPENCV_FFMPEG_CAPTURE_OPTIONS``, read at every open), and FFmpeg's log level too
(``OPENCV_FFMPEG_LOGLEVEL``, read once, at the first capture): :func:`configure_ffmpeg`
sets both once per process, before any capture, never while readers run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

import cv2

from rtvi.settings import require, setting
from rtvi.streaming.producer.sources.base import SourceError
from rtvi.streaming.producer.sources.capture import CaptureSource
from rtvi.streaming.producer.sources.probe import DEFAULT_PORTS, diagnose
from rtvi.streaming.producer.sources.redact import redact

SCHEMES = tuple(DEFAULT_PORTS)
RTSP_TRANSPORTS = ("tcp", "udp")
FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
FFMPEG_LOGLEVEL_ENV = "OPENCV_FFMPEG_LOGLEVEL"
_AV_LOG_QUIET = -8


@dataclass(frozen=True)
class UrlSettings:
    """Settings every service reading camera URLs shares (a base of its config dataclass)."""

    rtsp_transport: str = setting("tcp", "RTSP transport: tcp (RTP interleaved on the RTSP connection: "
                                  "passes firewalls and NAT, no loss) or udp (lower latency on a clean LAN)",
                                  choices=RTSP_TRANSPORTS)
    open_timeout_s: float = setting(10.0, "give up opening a camera URL after this many seconds")

    def _check_url_settings(self) -> None:
        require(self.open_timeout_s > 0, "open timeout must be > 0")


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a camera URL (redacted), or None if it can."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError:
        return f"{redact(url)!r} is not a valid URL"
    if parts.scheme not in SCHEMES:
        return f"{redact(url)!r}: the scheme must be one of {', '.join(s + '://' for s in SCHEMES)}"
    if not parts.hostname:
        return f"{redact(url)!r} has no host"
    return None


def configure_ffmpeg(rtsp_transport: str, native_logs: bool) -> None:
    """Make every capture opened from now on use ``rtsp_transport``; unless ``native_logs``,
    keep FFmpeg and OpenCV quiet: every failure is reported once, typed and explained, by the
    caller, where FFmpeg would print a line per attempt (at `--log-level debug` they speak,
    redacted like everything else). An operator's own variables win."""
    os.environ.setdefault(FFMPEG_OPTIONS_ENV, f"rtsp_transport;{rtsp_transport}")
    if not native_logs:
        os.environ.setdefault(FFMPEG_LOGLEVEL_ENV, str(_AV_LOG_QUIET))
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


class UrlSource(CaptureSource):
    """A live stream by URL. ``read_timeout_s`` bounds one blocking read: past it, a read
    fails and the caller reconnects. ``decode_threads`` 1 decodes on the reader's own thread,
    which is what a fleet of cameras wants (one thread per camera, no oversubscription)."""

    live = True

    def __init__(self, url: str, open_timeout_s: float = 10.0, read_timeout_s: float = 10.0,
                 decode_threads: int = 1) -> None:
        super().__init__()
        problem = url_problem(url)
        if problem:
            raise SourceError(problem)
        self.url = url
        self.description = redact(url)
        self.open_timeout_s, self.read_timeout_s, self.decode_threads = open_timeout_s, read_timeout_s, decode_threads

    def __repr__(self) -> str:
        return f"UrlSource({self.description!r})"

    def _open_capture(self) -> cv2.VideoCapture:
        return cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, round(self.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, round(self.read_timeout_s * 1000),
            cv2.CAP_PROP_N_THREADS, self.decode_threads,
        ])

    def _open_failed(self, seconds: float) -> SourceError:
        return diagnose(self.url, self.open_timeout_s, seconds)
