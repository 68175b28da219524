"""A private Docker engine for the container tests, and a Debian base image.

No image registry is reachable here, so `FROM python:3.11-slim-bookworm` cannot be
pulled. The tests build a stand-in base from Debian packages (debootstrap: Debian's
python3.11, plus this machine's CA certificates so pip works through its HTTPS proxy)
and pass it as the PYTHON_IMAGE build arg; the Dockerfiles stay as users build them.

If no engine is running, one is started as root from Debian's docker.io with its own
data root and socket, and stopped when the tests end.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from support.tools import apt_install

BASE_IMAGE = "rtvi-test-base:bookworm"
# Debian's docker.io client (20.10) drives its engine, BuildKit included.
DOCKER = "/usr/bin/docker"
PACKAGES = ["docker.io", "iptables", "debootstrap"]


class EngineUnavailable(RuntimeError):
    pass


class DockerEngine:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rtvi-docker-"))
        self.host = f"unix://{self.root}/docker.sock"
        self._proc: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1"}

    def docker(self, *args: str, check: bool = True, timeout: float = 1800, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([DOCKER, *args], env=self.env(), check=check, timeout=timeout, text=True,
                              capture_output=True, **kwargs)

    def start(self) -> DockerEngine:
        if os.geteuid() != 0:
            raise EngineUnavailable("container tests need root to run their own Docker engine")
        if not (shutil.which("dockerd") and Path(DOCKER).exists() and shutil.which("debootstrap")):
            try:
                apt_install(PACKAGES, "no dockerd and no apt-get to install Debian's docker.io")
            except RuntimeError as exc:
                raise EngineUnavailable(str(exc)) from None
        log = open(self.root / "dockerd.log", "wb")
        self._proc = subprocess.Popen(
            ["dockerd", "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
             "-H", self.host, "-p", str(self.root / "docker.pid"),
             # Containers here use the host's network: no docker0 bridge, and no iptables rules
             # that would meet a Kubernetes node's kube-proxy rules in the same tables.
             "--bridge", "none", "--iptables=false"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while self.docker("info", check=False, timeout=30).returncode != 0:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise EngineUnavailable(f"dockerd did not start:\n{(self.root / 'dockerd.log').read_text()[-2000:]}")
            time.sleep(0.5)
        return self

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            running = self.docker("ps", "-q", check=False).stdout.split()
            if running:
                self.docker("rm", "-f", *running, check=False)
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        # dockerd leaves its network namespace bind-mounted under the exec root.
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(f"{self.root}/")]
        for mount in sorted(mounts, reverse=True):
            subprocess.run(["umount", "--lazy", mount], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def image_size(self, tag: str) -> int:
        return int(self.docker("image", "inspect", "-f", "{{.Size}}", tag).stdout)

    def build_base_image(self) -> str:
        """Debian bookworm with python3, venv and this machine's CA certificates."""
        rootfs = self.root / "rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=ca-certificates,python3,python3-venv,passwd",
             "bookworm", str(rootfs)],
            check=True, capture_output=True, timeout=900,
        )
        for cert in Path("/usr/local/share/ca-certificates").glob("*.crt"):
            shutil.copy(cert, rootfs / "usr/local/share/ca-certificates" / cert.name)
        subprocess.run(["chroot", str(rootfs), "update-ca-certificates"], check=True, capture_output=True)
        # What the official slim images leave out too: package caches and lists, docs, locales.
        for junk in ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale",
                     "usr/share/info"):
            for child in (rootfs / junk).glob("*"):
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        self.docker("import", "-", BASE_IMAGE, stdin=tar.stdout)
        tar.wait()
        shutil.rmtree(rootfs, ignore_errors=True)
        return BASE_IMAGE
