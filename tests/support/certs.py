"""Throw-away certificate authorities and certificates, made with openssl at test time."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def require_openssl() -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found: the TLS tests make their certificates with it")


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


class TestCA:
    """A CA in ``folder`` (``<name>.pem``, ``<name>.key``) that issues leaf certificates."""

    __test__ = False  # not a pytest test class

    def __init__(self, folder: Path, name: str = "ca") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.name = folder, name
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
                "-days", "2", "-subj", f"/CN=rtvi-test-{name}", cwd=folder)
        self.pem = folder / f"{name}.pem"

    def issue(self, name: str, *, dns: tuple[str, ...] = (), ips: tuple[str, ...] = (), client: bool = False,
              days: int = 2) -> Issued:
        """A certificate for ``name`` with those subject alternative names, for a server (or a client)."""
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=self.folder)
        sans = [f"DNS:{d}" for d in dns] + [f"IP:{ip}" for ip in ips]
        extensions = [f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}"]
        if sans:
            extensions.append("subjectAltName=" + ",".join(sans))
        (self.folder / f"{name}.cnf").write_text("\n".join(extensions) + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", self.pem.name, "-CAkey", f"{self.name}.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", str(days), "-extfile", f"{name}.cnf",
                cwd=self.folder)
        return Issued(self.folder / f"{name}.crt", self.folder / f"{name}.key")
