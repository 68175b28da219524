"""Why a camera URL did not open, as one typed error.

OpenCV only says that a capture did not open. Asked afterwards (never on the happy path),
the network says why, step by step: does the name resolve, does the port accept a
connection, and what does the server answer a DESCRIBE (RTSP) or GET (HTTP) with, using
the URL's credentials (Basic or Digest, as FFmpeg would) — 401/403 is an authentication
error, 404 a wrong path, 200 a stream FFmpeg cannot decode. The probe reads only the
status line and headers, and closes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
from urllib.parse import unquote, urlsplit

from rtvi.streaming.producer.sources.base import (
    SourceAuthFailed, SourceError, SourceNotFound, SourceTimeout, SourceUnreachable, SourceUnsupported,
)
from rtvi.streaming.producer.sources.redact import redact

DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
_MAX_HEAD = 16 * 1024


def diagnose(url: str, timeout_s: float, open_seconds: float) -> SourceError:
    """The error to report for ``url``, which OpenCV could not open after ``open_seconds``."""
    shown = redact(url)
    if open_seconds >= timeout_s * 0.95:
        return SourceTimeout(f"{shown}: no stream within the {timeout_s:g} s open timeout")
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or DEFAULT_PORTS.get(parts.scheme, 0)
    try:
        address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4]
    except (socket.gaierror, UnicodeError):
        return SourceUnreachable(f"{shown}: cannot resolve host {host!r}")
    try:
        status, reason = _ask(lambda: _connect(parts, address, timeout_s), parts)
    except ConnectionRefusedError:
        return SourceUnreachable(f"{shown}: connection refused by {host}:{port}")
    except _NoAnswer:
        return SourceTimeout(f"{shown}: {host}:{port} accepted a connection but did not answer within {timeout_s:g} s")
    except (socket.timeout, TimeoutError):
        return SourceTimeout(f"{shown}: no answer from {host}:{port} within {timeout_s:g} s")
    except (ssl.SSLError, ValueError) as exc:
        return SourceUnsupported(f"{shown}: {host}:{port} does not speak {parts.scheme.upper()} "
                                 f"({redact(str(exc)) or type(exc).__name__})")
    except OSError as exc:
        return SourceUnreachable(f"{shown}: cannot connect to {host}:{port} ({exc.strerror or exc})")
    return _by_status(shown, status, reason, has_credentials=parts.username is not None)


def _by_status(shown: str, status: int, reason: str, has_credentials: bool) -> SourceError:
    if status in (401, 403):
        if has_credentials:
            return SourceAuthFailed(f"{shown}: the camera refused the credentials ({status} {reason})")
        return SourceAuthFailed(f"{shown}: the camera needs credentials ({status} {reason}): "
                                "put them in the URL, user:password@host")
    if status == 404:
        return SourceNotFound(f"{shown}: no stream at this path (404 {reason})")
    if 200 <= status < 300:
        return SourceUnsupported(f"{shown}: the camera answered, but OpenCV's FFmpeg cannot decode what it "
                                 "sends (codec or format)")
    return SourceUnsupported(f"{shown}: the camera answered {status} {reason}")


class _NoAnswer(Exception):
    """Connected, but the server said nothing in time."""


def _connect(parts, address: tuple, timeout_s: float) -> socket.socket:
    sock = socket.create_connection(address[:2], timeout=timeout_s)
    if parts.scheme in ("rtsps", "https"):
        context = ssl.create_default_context()
        # As FFmpeg (tls_verify=0 by default): cameras mostly have self-signed certificates.
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        sock = context.wrap_socket(sock, server_hostname=parts.hostname)
    return sock


def _ask(connect, parts) -> tuple[int, str]:
    """Status of one DESCRIBE (RTSP) or GET (HTTP) for the URL, answering one auth challenge
    (on the same connection for RTSP; HTTP servers close after a 401, so on a new one)."""
    rtsp = parts.scheme.startswith("rtsp")
    target = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()
    method, uri = ("DESCRIBE", target) if rtsp else ("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    sock = connect()
    try:
        status, reason, headers = _request(sock, method, uri, rtsp, parts, cseq=1)
        challenge = headers.get("www-authenticate", "")
        if status != 401 or parts.username is None or not challenge:
            return status, reason
        authorization = _authorization(challenge, method, uri, unquote(parts.username), unquote(parts.password or ""))
        if not rtsp:
            sock.close()
            sock = connect()
        status, reason, _ = _request(sock, method, uri, rtsp, parts, cseq=2, authorization=authorization)
        return status, reason
    finally:
        sock.close()


def _request(sock: socket.socket, method: str, uri: str, rtsp: bool, parts, cseq: int,
             authorization: str | None = None) -> tuple[int, str, dict[str, str]]:
    lines = [f"{method} {uri} {'RTSP/1.0' if rtsp else 'HTTP/1.1'}", "User-Agent: rtvi-probe"]
    lines += [f"CSeq: {cseq}", "Accept: application/sdp"] if rtsp else [f"Host: {parts.netloc.rpartition('@')[2]}",
                                                                         "Connection: close"]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        try:
            chunk = sock.recv(4096)
        except (socket.timeout, TimeoutError):
            raise _NoAnswer from None
        if not chunk or len(head) > _MAX_HEAD:
            raise ValueError("no complete response")
        head += chunk
    head, _, body = head.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith(("RTSP/", "HTTP/")) or not code.isdigit():
        raise ValueError(f"unexpected answer {status_line[:40]!r}")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    length = int(headers.get("content-length", "0") or 0)
    while rtsp and len(body) < length:  # a 401 body must be read before the next request
        chunk = sock.recv(length - len(body))
        if not chunk:
            break
        body += chunk
    return int(code), reason, headers


def _authorization(challenge: str, method: str, uri: str, user: str, password: str) -> str:
    scheme, _, params = challenge.partition(" ")
    if scheme.lower() == "basic":
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    fields = {}
    for part in params.split(","):
        key, _, value = part.strip().partition("=")
        fields[key.lower()] = value.strip('"')
    realm, nonce = fields.get("realm", ""), fields.get("nonce", "")
    ha1 = _md5(f"{user}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    answer = f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}"'
    if "auth" in fields.get("qop", "").split(","):
        cnonce = os.urandom(8).hex()
        response = _md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
        answer += f', qop=auth, nc=00000001, cnonce="{cnonce}"'
    else:
        response = _md5(f"{ha1}:{nonce}:{ha2}")
    if "opaque" in fields:
        answer += f', opaque="{fields["opaque"]}"'
    return answer + f', response="{response}"'


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()
