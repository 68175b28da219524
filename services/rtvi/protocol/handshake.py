"""Why a v2 server cannot be reached: a TLS misconfiguration, or just nothing answering.

grpc reports both as UNAVAILABLE, and its text differs by case and version (a refused
client certificate reads "Socket closed", like a server that went away). So when a call
finds the server UNAVAILABLE, the client asks again with its own TLS handshake, made with
Python's ssl and the same files and name, and reads the answer from OpenSSL's typed
errors: an untrusted certificate, a name the certificate lacks, a server that speaks
plaintext (or TLS to a plaintext client), or a server that closes the connection right
after the handshake without a word of HTTP/2, which is how a TLS 1.3 server refuses a
client certificate. Anything else (refused, timed out, unresolvable) is not TLS's doing.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

from rtvi.errors import BadInput
from rtvi.protocol.tls import ClientTls

# The HTTP/2 client preface and an empty SETTINGS frame: a gRPC server answers it with
# its own SETTINGS; one that refused the client's certificate closes instead.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH
CLIENT_CERT_ALERTS = ("CERTIFICATE_REQUIRED", "BAD_CERTIFICATE", "UNKNOWN_CA", "CERTIFICATE_EXPIRED",
                      "CERTIFICATE_UNKNOWN", "CERTIFICATE_REVOKED", "ACCESS_DENIED", "HANDSHAKE_FAILURE")
MAX_ADDRESSES = 3


class InferenceTlsError(BadInput):
    """TLS between the v2 client and the server is misconfigured: retrying cannot help."""


def address(target: str) -> tuple[str, int] | None:
    """(host, port) of a gRPC target (``host:port``, ``dns:///host:port``, ``ipv4:a:p``,
    ``[::1]:p``); None for targets a socket cannot dial directly (``unix:``, ``xds:``)."""
    rest = target
    if rest.startswith("dns:"):
        rest = rest[4:]
        if rest.startswith("//"):
            rest = rest[2:].partition("/")[2]  # drop the (optional) DNS server authority
    elif rest.startswith(("ipv4:", "ipv6:")):
        rest = rest.partition(":")[2].split(",")[0]
    elif "://" in rest or rest.startswith(("unix:", "unix-abstract:", "vsock:")):
        return None
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail.removeprefix(":") or "443"
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    elif ":" in rest:  # a bare IPv6 address
        host, port = rest, "443"
    else:
        host, port = rest, "443"
    if not host or not port.isdigit():
        return None
    return host, int(port)


def _connect(host: str, port: int, timeout: float) -> socket.socket | None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return None
    for family, kind, proto, _, sockaddr in infos[:MAX_ADDRESSES]:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            return sock
        except OSError:
            sock.close()
    return None


def _client_context(tls: ClientTls | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_alpn_protocols(["h2"])
    if tls is None:  # only to learn whether the server speaks TLS at all
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context.load_verify_locations(cafile=tls.files.ca)
    if tls.files.cert:
        context.load_cert_chain(tls.files.cert, tls.files.key, password=b"")
    return context


def diagnose(target: str, tls: ClientTls | None, timeout: float = 3.0) -> str | None:
    """One line saying how TLS keeps this client from ``target``, or None when TLS is not
    the problem (nothing answers, or the handshake and the server's first frame are fine)."""
    where = address(target)
    sock = _connect(*where, timeout) if where else None
    if sock is None:
        return None
    server = f"the inference server at {target}"
    name = (tls.server_name if tls else "") or where[0]
    try:
        conn = _client_context(tls).wrap_socket(sock, server_hostname=name if tls else None)
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code == HOSTNAME_MISMATCH:
            return (f"{server} presented a certificate that is not valid for {name!r}: set "
                    "--inference-tls-server-name to a name the certificate carries")
        return f"{server} presented a certificate --inference-tls-ca does not trust: {exc.verify_message}"
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
        return None  # closed mid-handshake: a server going away says no more than that
    except ssl.SSLError as exc:
        if tls is None:
            return None  # no TLS here: the plaintext client is right
        if exc.reason == "WRONG_VERSION_NUMBER":
            return f"{server} does not speak TLS: drop --inference-tls-* or start the server with --tls-cert/--tls-key"
        if not any(alert in (exc.reason or "") for alert in CLIENT_CERT_ALERTS):
            return f"TLS handshake with {server} failed: {exc.reason or exc}"
        return _refused(server, tls)
    except OSError:
        return None  # reset or timed out during the handshake: not an answer
    finally:
        sock.close()
    with conn:
        if tls is None:
            return (f"{server} speaks TLS: set --inference-tls-ca (and --inference-tls-cert/--inference-tls-key "
                    "if it requires client certificates)")
        try:
            conn.sendall(H2_PREFACE)
            if conn.recv(9):
                return None  # a gRPC server's SETTINGS: TLS is fine
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass  # an alert or a reset right after the handshake: refused, as a closed connection
        except OSError:
            return None  # timed out: the server is slow, not refusing
    return _refused(server, tls)


def _refused(server: str, tls: ClientTls) -> str:
    """The server closed the connection after the handshake: it did not accept this client."""
    if not tls.files.cert:
        return f"{server} requires a client certificate: set --inference-tls-cert and --inference-tls-key"
    return (f"{server} refused the client certificate --inference-tls-cert {tls.files.cert} (not signed by a CA "
            "the server trusts with --tls-client-ca, or expired)")


async def raise_if_misconfigured(target: str, tls: ClientTls | None) -> None:
    """InferenceTlsError when TLS is why ``target`` is unavailable (the check blocks, so it
    runs on a thread)."""
    problem = await asyncio.to_thread(diagnose, target, tls)
    if problem is not None:
        raise InferenceTlsError(problem)
