"""Request errors carry the gRPC status a v2 client expects and a metric reason."""

from __future__ import annotations

import grpc


class RequestError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, reason: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason


def invalid(message: str, reason: str = "invalid_input") -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message, reason)
