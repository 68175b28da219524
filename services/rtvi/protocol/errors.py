"""The one error a v2 client raises, so that callers never import grpc.

Like the Triton client's ``InferenceServerException``: the status is a plain code
name, and whether a retry can help is decided here, once, for every caller (the
consumer retries with backoff; the benchmarks stop).
"""

from __future__ import annotations

from rtvi.errors import ExitCode, RtviError

# Status codes worth retrying: the server is down, restarting, draining or overloaded.
RETRYABLE_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"})


class InferenceError(RtviError):
    """A v2 call failed. ``code`` is the gRPC status name (``"INVALID_ARGUMENT"``, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def exit_code(self) -> ExitCode:  # type: ignore[override]
        """A server that did not answer is unreachable; any other refusal is failed work."""
        return ExitCode.UNREACHABLE if self.code == "UNAVAILABLE" else ExitCode.FAILED

    @property
    def retryable(self) -> bool:
        """True when the same call may succeed later (the frame is fine, the server is not)."""
        return self.code in RETRYABLE_CODES
