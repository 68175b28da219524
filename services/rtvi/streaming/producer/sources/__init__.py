"""Where frames come from: one module per kind of source, all behind ``base.FrameSource``.

``synthetic`` (a test pattern), ``file`` (a video file), ``webcam`` (a local camera),
``folder`` (images), ``url`` (RTSP/HTTP network cameras, with ``probe`` explaining a
failed open and ``redact`` keeping their credentials out of every log line).
"""

from __future__ import annotations


def check_capture(target: str | int) -> None:
    """Open and close a video file (a path) or a camera (an index): a missing one is a
    SourceError now, before anything else starts, not later."""
    from rtvi.streaming.producer.sources.file import VideoFileSource
    from rtvi.streaming.producer.sources.webcam import WebcamSource

    source = WebcamSource(target) if isinstance(target, int) else VideoFileSource(target)
    source.open()
    source.close()
