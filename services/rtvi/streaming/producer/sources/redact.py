"""Camera credentials out of every line a person or a log store sees.

Camera URLs carry passwords (``rtsp://user:pass@host/...``) and HTTP cameras often carry
tokens in the query (``?token=...``). rtvi's own messages show URLs through :func:`redact`.
What it cannot reword is the native libraries' output: FFmpeg and OpenCV write straight
to file descriptors 1 and 2, and some of their messages (at FFmpeg's verbose levels, HLS
segment errors) print the URL they were given. :class:`NativeOutputRedactor` passes both
descriptors through a pipe and masks credentials there, so nothing reaches the pod log
unmasked, whoever wrote it.
"""

from __future__ import annotations

import os
import re
import select
import sys
import threading
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"
_USERINFO = re.compile(r"(?P<prefix>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@")
_QUERY_SECRET = re.compile(
    r"(?i)(?P<prefix>[?&](?:password|passwd|pass|pwd|token|access_token|auth|key|api_key|apikey|secret|"
    r"signature|sig)=)[^&#\s]+")
# FFmpeg's trace level prints request headers: a Basic credential is only base64.
_AUTHORIZATION = re.compile(r"(?im)(?P<prefix>\b(?:proxy-)?authorization:[ \t]*)[^\r\n]+")
SECRET_QUERY_KEYS = {"password", "passwd", "pass", "pwd", "token", "access_token", "auth", "key", "api_key",
                     "apikey", "secret", "signature", "sig"}
# Masking a short string everywhere would mangle unrelated text (a password "1" in "frame 1"):
# those are masked only where they appear as URL parts.
_MIN_LOOSE_SECRET = 4


def redact(text: str) -> str:
    """``rtsp://user:pass@host/x?token=t`` -> ``rtsp://user:***@host/x?token=***``, anywhere in ``text``;
    and the value of any ``Authorization:`` header line."""
    text = _USERINFO.sub(lambda m: f"{m['prefix']}:{MASK}@", text)
    text = _AUTHORIZATION.sub(lambda m: f"{m['prefix']}{MASK}", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['prefix']}{MASK}", text)


def url_secrets(url: str) -> set[str]:
    """The secret parts of ``url`` (password, secret query values), raw and percent-encoded."""
    parts = urlsplit(url)
    found = set()
    if parts.password:
        found |= {parts.password, unquote(parts.password)}
    found |= {value for key, value in parse_qsl(parts.query) if key.lower() in SECRET_QUERY_KEYS}
    return {secret for secret in found if secret}


class NativeOutputRedactor:
    """Route file descriptors 1 and 2 through pipes whose lines are redacted on the way out.

    ``add(url)`` registers a URL's secrets, which are then masked wherever they appear (not
    only inside URLs). Use as a context manager around a service's whole run; ``stop``
    restores the descriptors and writes out what is still in the pipes.
    """

    def __init__(self, fds: tuple[int, ...] = (1, 2)) -> None:
        self.fds = fds
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        self._saved: dict[int, int] = {}
        self._threads: list[threading.Thread] = []

    def add(self, url: str) -> None:
        with self._lock:
            self._secrets |= {s for s in url_secrets(url) if len(s) >= _MIN_LOOSE_SECRET}

    def mask(self, text: str) -> str:
        text = redact(text)
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            text = text.replace(secret, MASK)
        return text

    def start(self) -> NativeOutputRedactor:
        for fd in self.fds:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            self._saved[fd] = os.dup(fd)
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            thread = threading.Thread(target=self._pump, args=(read_end, self._saved[fd]),
                                      name=f"redact-fd{fd}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)  # the pipe's last write end closes: its pump reads to the end and stops
        for thread in self._threads:
            thread.join(5)
        for saved in self._saved.values():
            os.close(saved)
        self._saved.clear()
        self._threads.clear()

    def __enter__(self) -> NativeOutputRedactor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _pump(self, read_end: int, out: int) -> None:
        """Forward whole lines (a secret is never split between two writes); a partial line
        is forwarded once nothing more came for a moment, so prompts are not held back."""
        pending = b""
        try:
            while True:
                ready, _, _ = select.select([read_end], [], [], 0.2)
                if not ready:
                    if pending:
                        self._write(out, pending)
                        pending = b""
                    continue
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                pending += chunk
                cut = pending.rfind(b"\n") + 1
                if cut:
                    self._write(out, pending[:cut])
                    pending = pending[cut:]
            if pending:
                self._write(out, pending)
        finally:
            os.close(read_end)

    def _write(self, out: int, data: bytes) -> None:
        masked = self.mask(data.decode("utf-8", errors="surrogateescape")).encode("utf-8", errors="surrogateescape")
        while masked:
            try:
                masked = masked[os.write(out, masked):]
            except OSError:  # our own output is gone (a closed pipe): nothing left to protect
                return
