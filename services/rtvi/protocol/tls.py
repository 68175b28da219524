"""TLS for the v2 gRPC hop: credentials from PEM files, reloaded when the files change.

Shared by both ends. ``rtvi serve`` presents a certificate and, given a client CA, asks
every client for a certificate that CA signed (mutual TLS); the v2 client verifies the
server against a CA and may present its own certificate.

Kubernetes rotates a mounted Secret by pointing a symlink at a new directory, so the
files are watched by their ``stat`` (which follows the link): the server re-reads them
before a new connection's handshake (grpc's dynamic server credentials), the client
opens a new channel for new calls while the old one finishes its calls. A change is
taken only once the files form a valid set again: a rotation caught half-written keeps
the old certificate rather than breaking every new connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from prometheus_client import Counter

from rtvi.errors import BadInput
from rtvi.settings import require, setting

log = logging.getLogger("rtvi.tls")

RELOADS = Counter(
    "rtvi_tls_reloads_total",
    "Changed TLS certificate files: loaded, or rejected (an invalid set; the previous certificate stays in use)",
    ["outcome"],
)
# How often a client checks its files; the server checks before every new connection.
CLIENT_CHECK_INTERVAL_S = 5.0
# How long calls already on a client's previous channel may take to finish after a reload.
OLD_CHANNEL_GRACE_S = 60.0


class TlsFilesError(BadInput):
    """A certificate, key or CA file is missing, unreadable or not valid PEM, or the key
    does not belong to the certificate."""


@dataclass(frozen=True)
class PemFiles:
    """Paths of a certificate chain, its private key and a CA bundle (any may be empty),
    with the flags that set them, for error messages."""

    cert: str = ""
    key: str = ""
    ca: str = ""
    flags: tuple[str, str, str] = field(default=("certificate", "private key", "CA bundle"), compare=False)

    def paths(self) -> list[str]:
        return [path for path in (self.cert, self.key, self.ca) if path]

    def signature(self) -> tuple:
        """What changes when any file is replaced (a new inode behind a swapped symlink, or new content)."""
        return tuple((st.st_ino, st.st_mtime_ns, st.st_size) for st in map(os.stat, self.paths()))


@dataclass(frozen=True)
class Pem:
    """The contents of PemFiles, validated together."""

    cert: bytes | None
    key: bytes | None
    ca: bytes | None

    @property
    def fingerprint(self) -> str:
        """Short SHA-256 of the leaf certificate, to tell certificates apart in logs."""
        text = (self.cert or b"").decode("ascii", "replace")
        begin, end = text.find(ssl.PEM_HEADER), text.find(ssl.PEM_FOOTER)
        if begin < 0 or end < begin:
            return "-"
        der = ssl.PEM_cert_to_DER_cert(text[begin:end + len(ssl.PEM_FOOTER)])
        return hashlib.sha256(der).hexdigest()[:16]


def _check(files: PemFiles) -> None:
    """Let OpenSSL parse the files as a TLS endpoint would; TlsFilesError says which is wrong."""
    cert_flag, key_flag, ca_flag = files.flags
    for flag, path in zip(files.flags, (files.cert, files.key, files.ca), strict=True):
        if path and not os.access(path, os.R_OK):
            reason = "no such file" if not os.path.exists(path) else "not readable by this user"
            raise TlsFilesError(f"{flag} {path}: {reason}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if files.ca:
        try:
            context.load_verify_locations(cafile=files.ca)
        except (ssl.SSLError, OSError) as exc:
            raise TlsFilesError(f"{ca_flag} {files.ca}: not a PEM CA certificate ({_reason(exc)})") from None
    if files.cert:
        try:
            # A password (even empty) keeps OpenSSL from prompting for an encrypted key.
            context.load_cert_chain(files.cert, files.key, password=b"")
        except (ssl.SSLError, OSError) as exc:
            if getattr(exc, "reason", "") == "KEY_VALUES_MISMATCH":
                raise TlsFilesError(f"{key_flag} {files.key} is not the private key of {cert_flag} {files.cert}") from None
            raise TlsFilesError(f"{cert_flag} {files.cert} / {key_flag} {files.key}: not a PEM certificate chain and "
                                f"unencrypted private key ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__


def _read(path: str) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


def load(files: PemFiles) -> Pem:
    """Validated contents of ``files``; TlsFilesError (exit 2) names the file that is wrong."""
    _check(files)
    try:
        return Pem(_read(files.cert), _read(files.key), _read(files.ca))
    except OSError as exc:
        raise TlsFilesError(f"reading {exc.filename}: {exc.strerror}") from None


class PemWatch:
    """The current contents of PemFiles, re-read when a file's stat changes.

    ``poll`` is cheap (three stats) and thread-safe: grpc calls it from its own threads.
    """

    def __init__(self, files: PemFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self.current = load(files)
        self._signature = files.signature()

    def poll(self) -> Pem | None:
        """The new contents when the files changed into a valid set; None otherwise."""
        with self._lock:
            try:
                signature = self.files.signature()
                if signature == self._signature:
                    return None
                pem = load(self.files)
                if self.files.signature() != signature:
                    return None  # still being written: look again next time
            except OSError:
                return None  # a file is being replaced: look again next time
            except TlsFilesError as exc:
                self._signature = signature  # not again until the files change once more
                RELOADS.labels("rejected").inc()
                log.warning("TLS files changed but cannot be used (%s); keeping certificate %s",
                            exc, self.current.fingerprint)
                return None
            self._signature = signature
            if pem == self.current:
                return None
            log.info("TLS files changed: certificate %s replaces %s", pem.fingerprint, self.current.fingerprint)
            RELOADS.labels("loaded").inc()
            self.current = pem
            return pem


# --- the server ---------------------------------------------------------------------------------

def _server_config(pem: Pem) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(pem.key, pem.cert)], root_certificates=pem.ca)


def server_credentials(files: PemFiles) -> grpc.ServerCredentials:
    """TLS server credentials that pick up changed files at the next connection; client
    certificates are required (and verified against ``files.ca``) when a CA is given."""
    watch = PemWatch(files)

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        pem = watch.poll()
        return None if pem is None else _server_config(pem)

    return grpc.dynamic_ssl_server_credentials(_server_config(watch.current), fetch,
                                               require_client_authentication=bool(files.ca))


# --- the client ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClientTls:
    """How a v2 client speaks TLS: the CA it trusts, its own certificate for mutual TLS, and
    the name to expect in the server's certificate (empty: the host of the address)."""

    files: PemFiles
    server_name: str = ""


@dataclass(frozen=True)
class InferenceTlsConfig:
    """The v2 client's TLS settings, for any command that calls an inference server.

    Cooperative: a config that lists it before another settings base still runs that
    base's ``__post_init__``.
    """

    inference_tls_ca: str = setting(
        "", "PEM CA bundle that signed the inference server's certificate; setting it makes every v2 call use TLS",
        metavar="FILE")
    inference_tls_cert: str = setting(
        "", "PEM client certificate (chain) for a server that requires one (mutual TLS: rtvi serve --tls-client-ca); "
        "re-read when the file changes", metavar="FILE")
    inference_tls_key: str = setting("", "PEM private key of --inference-tls-cert (unencrypted)", metavar="FILE")
    inference_tls_server_name: str = setting(
        "", "name to verify in the server's certificate instead of the address's host (an IP address, a "
        "port-forward, a Service name the certificate does not carry)", metavar="NAME")

    def __post_init__(self) -> None:
        require(bool(self.inference_tls_cert) == bool(self.inference_tls_key),
                "--inference-tls-cert and --inference-tls-key go together")
        require(bool(self.inference_tls_ca) or not (self.inference_tls_cert or self.inference_tls_server_name),
                "--inference-tls-cert and --inference-tls-server-name need --inference-tls-ca (TLS is on when it is set)")
        parent: Callable[[], None] | None = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()

    @property
    def inference_tls(self) -> ClientTls | None:
        if not self.inference_tls_ca:
            return None
        files = PemFiles(self.inference_tls_cert, self.inference_tls_key, self.inference_tls_ca,
                         flags=("--inference-tls-cert", "--inference-tls-key", "--inference-tls-ca"))
        return ClientTls(files, self.inference_tls_server_name)


def channel(target: str, options: list[tuple[str, Any]], tls: ClientTls | None) -> grpc.aio.Channel:
    """A plaintext channel, or one that speaks TLS with ``tls`` and renews itself when its files change."""
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    return ReloadingChannel(target, options, tls)


def _secure_channel(target: str, options: list[tuple[str, Any]], tls: ClientTls, pem: Pem) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(root_certificates=pem.ca, private_key=pem.key,
                                               certificate_chain=pem.cert)
    if tls.server_name:
        options = [*options, ("grpc.ssl_target_name_override", tls.server_name)]
    return grpc.aio.secure_channel(target, credentials, options=options)


class _MultiCallable:
    """A stub's method that always calls through the channel current at call time."""

    def __init__(self, owner: ReloadingChannel, kind: str, args: tuple, kwargs: dict) -> None:
        self._owner, self._kind, self._args, self._kwargs = owner, kind, args, kwargs
        self._bound: tuple[grpc.aio.Channel, Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        current = self._owner.current()
        if self._bound is None or self._bound[0] is not current:
            self._bound = (current, getattr(current, self._kind)(*self._args, **self._kwargs))
        return self._bound[1](*args, **kwargs)


class ReloadingChannel(grpc.aio.Channel):
    """A TLS channel that moves new calls to a fresh channel when the certificate files
    change (grpc's client credentials are fixed at creation); calls on the previous
    channel get OLD_CHANNEL_GRACE_S to finish."""

    def __init__(self, target: str, options: list[tuple[str, Any]], tls: ClientTls) -> None:
        self._target, self._options, self._tls = target, options, tls
        self._watch = PemWatch(tls.files)
        self._channel = _secure_channel(target, options, tls, self._watch.current)
        self._next_check = time.monotonic() + CLIENT_CHECK_INTERVAL_S
        self._retired: dict[grpc.aio.Channel, asyncio.Task] = {}

    def current(self) -> grpc.aio.Channel:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + CLIENT_CHECK_INTERVAL_S
            pem = self._watch.poll()
            if pem is not None:
                old, self._channel = self._channel, _secure_channel(self._target, self._options, self._tls, pem)
                self._retired[old] = asyncio.get_running_loop().create_task(self._retire(old))
        return self._channel

    async def _retire(self, old: grpc.aio.Channel) -> None:
        await old.close(OLD_CHANNEL_GRACE_S)
        self._retired.pop(old, None)

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _MultiCallable(self, "unary_unary", args, kwargs)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _MultiCallable(self, "unary_stream", args, kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _MultiCallable(self, "stream_unary", args, kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _MultiCallable(self, "stream_stream", args, kwargs)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.current().get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self.current().wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self.current().channel_ready()

    async def close(self, grace: float | None = None) -> None:
        for task in self._retired.values():
            task.cancel()
        await asyncio.gather(self._channel.close(grace), *(old.close(grace) for old in self._retired))
        self._retired.clear()

    async def __aenter__(self) -> ReloadingChannel:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()
