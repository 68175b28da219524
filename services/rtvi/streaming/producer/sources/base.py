"""What every frame source is: a protocol, its states as data, and a typed error per failure.

A source is opened, then read one frame at a time in two steps: ``grab`` takes the next
frame off the stream (for compressed video this is the decode, which inter-coded frames
need anyway) and ``retrieve`` turns the frame last grabbed into a BGR image (the colour
conversion and copy). A reader that publishes 5 of a camera's 25 frames a second grabs
all 25 and retrieves 5.

The states are those a live source goes through under a supervisor (``rtvi ingest``);
``TRANSITIONS`` says which moves are legal, so a reader's bookkeeping can be checked
instead of trusted. The errors say what failed in words a camera operator acts on, carry
the exit code `rtvi produce` ends with, a metric label (``reason``) and whether trying
again can help (``retryable``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from enum import Enum
from typing import ClassVar, Protocol

import numpy as np

from rtvi.errors import ExitCode, RtviError


class FrameSource(Protocol):
    """One stream of frames. ``description`` is for people and never holds a credential."""

    description: str
    live: bool  # a camera (reconnect when it ends) rather than a file or a folder (done when it ends)

    def open(self) -> None:
        """Connect or open; raise a SourceError subclass saying why not."""

    def grab(self) -> bool:
        """Take the next frame off the stream; False at its end. Raises SourceError on failure."""

    def retrieve(self) -> np.ndarray:
        """The frame last grabbed, as a BGR image."""

    def close(self) -> None:
        """Release the source; safe to call more than once."""


def frames(source: FrameSource) -> Iterator[np.ndarray]:
    """Every frame of an opened source as an image, until it ends; the source is closed after."""
    try:
        while source.grab():
            yield source.retrieve()
    finally:
        source.close()


class SourceState(str, Enum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"  # waiting out a backoff delay before the next connect
    STOPPED = "stopped"


TRANSITIONS: Mapping[SourceState, frozenset[SourceState]] = {
    SourceState.CONNECTING: frozenset({SourceState.STREAMING, SourceState.RECONNECTING, SourceState.STOPPED}),
    SourceState.STREAMING: frozenset({SourceState.RECONNECTING, SourceState.STOPPED}),
    SourceState.RECONNECTING: frozenset({SourceState.CONNECTING, SourceState.STOPPED}),
    SourceState.STOPPED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A bug: code moved a source between states that TRANSITIONS does not connect."""


class Lifecycle:
    """A source's current state and since when, moved only along ``TRANSITIONS``."""

    def __init__(self, state: SourceState = SourceState.CONNECTING) -> None:
        self.state = state
        self.since = time.monotonic()

    def to(self, state: SourceState) -> bool:
        """Move to ``state``; False if already there (nothing changed)."""
        if state == self.state:
            return False
        if state not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"{self.state.value} -> {state.value}")
        self.state, self.since = state, time.monotonic()
        return True


class SourceError(RtviError):
    """A source cannot be opened or read. The message names the source, never its credentials."""

    exit_code = ExitCode.BAD_INPUT
    reason: ClassVar[str] = "failed"
    retryable: ClassVar[bool] = False


class SourceNotFound(SourceError):
    """No such file, camera device, or stream path on the server (RTSP/HTTP 404)."""

    reason = "not_found"


class SourceAuthFailed(SourceError):
    """The server refused the credentials, or asked for some that were not given (401/403)."""

    reason = "auth"


class SourceUnsupported(SourceError):
    """The source answered, but with nothing OpenCV's FFmpeg decodes (codec, format, not video)."""

    reason = "unsupported"


class SourceUnreachable(SourceError):
    """Nothing answered: a name that does not resolve, a refused connection, no route."""

    exit_code = ExitCode.UNREACHABLE
    reason = "unreachable"
    retryable = True


class SourceTimeout(SourceUnreachable):
    """The source did not answer in time, on connect or while streaming."""

    reason = "timeout"


class SourceEnded(SourceError):
    """The stream ended (the server closed it, or a file without --loop ran out)."""

    exit_code = ExitCode.FAILED
    reason = "ended"
    retryable = True


class SourceStalled(SourceTimeout):
    """A live stream delivered no frame within its stall timeout (the watchdog's verdict)."""

    reason = "stalled"


class SourceFrozen(SourceError):
    """A live stream kept sending the same picture: a camera whose encoder hung."""

    exit_code = ExitCode.FAILED
    reason = "frozen"
    retryable = True


def error_reasons() -> tuple[str, ...]:
    """Every ``reason`` a SourceError can carry (the metric label's values)."""
    found, pending = [], [SourceError]
    while pending:
        cls = pending.pop()
        found.append(cls.reason)
        pending += cls.__subclasses__()
    return tuple(dict.fromkeys(found))
