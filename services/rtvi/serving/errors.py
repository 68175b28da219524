"""Typed errors of the inference service.

Request errors carry a gRPC status *name* and a metric reason; the one interceptor
(``interceptors.py``) turns them into a status and a count, so nothing else here
imports grpc. Model load errors stop the server at start with one line naming the
file and the problem.
"""

from __future__ import annotations

from collections.abc import Iterable

from rtvi.errors import BadInput, RtviError


def first_line(exc: BaseException) -> str:
    """An exception's first line (or its type): libraries' load errors run to pages, and a
    start-up failure must stay one line naming the file and the problem."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class RequestError(RtviError):
    """A request the server refuses; ``code`` is a gRPC status name."""

    code = "INTERNAL"
    reason = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(RequestError):
    code, reason = "INVALID_ARGUMENT", "invalid_input"


class UndecodableImage(InvalidInput):
    reason = "decode"


class ImageTooLarge(InvalidInput):
    """Its header claims more pixels than --max-image-pixels: refused before decoding."""

    reason = "too_many_pixels"


class ModelNotFound(RequestError):
    code, reason = "NOT_FOUND", "unknown_model"

    def __init__(self, name: str, version: str, served: Iterable[str]) -> None:
        names = ", ".join(repr(n) for n in sorted(served)) or "none"
        super().__init__(f"unknown model {name!r} version {version!r}; this server serves {names} (version 1)")


class TooLarge(RequestError):
    code, reason = "RESOURCE_EXHAUSTED", "too_large"


class NotReady(RequestError):
    code, reason = "UNAVAILABLE", "not_ready"


class ModelLoadError(BadInput):
    """A model cannot be served; the message names the file (or model) and what to change."""
