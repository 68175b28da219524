"""Networking helpers shared by local mode, the services and the benchmarks."""

from __future__ import annotations

import socket


def port_free(host: str, port: int) -> bool:
    """Whether ``port`` on ``host`` can be bound now (so a service asked to use it will start)."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free on ``host`` right now (for services started next)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
