"""A live RTSP camera for the tests and the ingest benchmark, in pure Python.

No RTSP server can be installed here (see ENVIRONMENT.md), so this is one: RTSP 1.0 over
TCP with RTP interleaved on the same connection (RFC 2326 section 10.12), carrying MPEG-TS
(RTP payload type 33, RFC 2250). The clip is an MPEG-TS file, by default one made here with
OpenCV's ``VideoWriter`` (MPEG-4 part 2; the pip OpenCV has no H.264 encoder); any MPEG-TS
file works (the benchmark passes H.264 made with Debian's ffmpeg).

RTP goes over UDP instead when the client asks for it in SETUP (FFmpeg's ``rtsp_transport
udp``): the server then sends each session's packets to the client's port from a UDP port
of its own.

It behaves like a camera, not like a file server:

- live and paced: each session gets one frame every 1/fps seconds, starting at the clip's
  keyframe at or before the live position, and the clip loops for ever (continuity
  counters and timestamps are rewritten so a loop is no discontinuity);
- :meth:`RtspServer.stop` closes the port and every session (the camera is gone), and
  :meth:`RtspServer.start` brings it back on the same port;
- :meth:`RtspServer.pause` keeps every connection open but sends nothing (a stalled camera:
  a reader's next read blocks), :meth:`RtspServer.resume` goes on;
- optional Digest authentication (what IP cameras use), 404 for unknown paths.

Run it alone (a pod in the node test does): ``python rtsp_server.py --port 8554 --path cam``.
It needs only OpenCV and numpy, so the consumer image can run it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import select
import signal
import socket
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

TS_PACKET = 188
TS_PER_RTP = 7  # 1316 bytes of payload: fits an Ethernet MTU
PTS_HZ = 90_000
PCR_WRAP = 1 << 33
REALM = "rtvi-test-camera"


def make_clip(path: Path, width: int = 320, height: int = 240, fps: float = 25, seconds: float = 4,
              moving: bool = True) -> Path:
    """An MPEG-TS clip (MPEG-4 part 2) with a moving bar and the frame number, so frames differ
    (``moving=False``: every frame the same, a frozen camera)."""
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write an MPEG-TS clip to {path}")
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], -1).astype(np.uint8)
    for index in range(max(1, round(fps * seconds))):
        image = background.copy()
        if moving:
            x = index * 7 % width
            image[:, x:x + max(4, width // 16)] = 255
            cv2.putText(image, f"#{index}", (8, height - 12), cv2.FONT_HERSHEY_SIMPLEX, height / 240, (0, 0, 0), 2)
        writer.write(image)
    writer.release()
    return path


@dataclass
class Clip:
    """An MPEG-TS clip cut into frames (the TS packets of one video access unit each)."""

    frames: list[bytes]
    keyframes: list[int]
    fps: float

    @classmethod
    def from_ts(cls, data: bytes, fps: float) -> Clip:
        frames: list[bytes] = []
        keyframes: list[int] = []
        pending = bytearray()  # PAT/PMT and other packets go with the next frame
        current: bytearray | None = None
        video_pid = None
        for offset in range(0, len(data) - TS_PACKET + 1, TS_PACKET):
            packet = data[offset:offset + TS_PACKET]
            if packet[0] != 0x47:
                raise ValueError(f"not MPEG-TS: no sync byte at {offset}")
            pid = ((packet[1] & 0x1F) << 8) | packet[2]
            start = bool(packet[1] & 0x40)
            payload = packet[_payload_offset(packet):]
            if start and payload[:3] == b"\x00\x00\x01" and 0xE0 <= payload[3] <= 0xEF:
                video_pid = pid
                if current is not None:
                    frames.append(bytes(current))
                if _random_access(packet):
                    keyframes.append(len(frames))
                current = pending + packet
                pending = bytearray()
            elif pid == video_pid and current is not None:
                current += packet
            else:
                pending += packet
        if current is not None:
            frames.append(bytes(current))
        if not frames or not keyframes:
            raise ValueError("the clip has no video frames or no keyframe")
        return cls(frames, keyframes, fps)

    @classmethod
    def make(cls, width: int = 320, height: int = 240, fps: float = 25, seconds: float = 4,
             moving: bool = True) -> Clip:
        with tempfile.TemporaryDirectory() as tmp:
            path = make_clip(Path(tmp) / "clip.ts", width, height, fps, seconds, moving)
            return cls.from_ts(path.read_bytes(), fps)

    def keyframe_at_or_before(self, index: int) -> int:
        return max((k for k in self.keyframes if k <= index), default=self.keyframes[0])


def _payload_offset(packet: bytes) -> int:
    control = (packet[3] >> 4) & 0x3
    return 4 + (1 + packet[4] if control & 0x2 else 0)


def _random_access(packet: bytes) -> bool:
    """The adaptation field's random_access_indicator: FFmpeg's muxer sets it on keyframes."""
    return bool((packet[3] >> 4) & 0x2) and packet[4] > 0 and bool(packet[5] & 0x40)


def _shift_timestamps(packet: bytearray, shift: int) -> None:
    """Add ``shift`` (90 kHz ticks) to the PCR and the PES PTS/DTS of one TS packet, in place."""
    control = (packet[3] >> 4) & 0x3
    if control & 0x2 and packet[4] >= 7 and packet[5] & 0x10:  # PCR: 33-bit base, 6 reserved bits, 9-bit ext
        raw = int.from_bytes(packet[6:12], "big")
        base = ((raw >> 15) + shift) % PCR_WRAP
        packet[6:12] = ((base << 15) | (raw & 0x7FFF)).to_bytes(6, "big")
    start = _payload_offset(packet)
    if packet[1] & 0x40 and packet[start:start + 3] == b"\x00\x00\x01" and 0xE0 <= packet[start + 3] <= 0xEF:
        flags = packet[start + 7] >> 6
        for present, at in ((flags & 0x2, start + 9), (flags == 0x3, start + 14)):
            if present:
                field_ = packet[at:at + 5]
                value = (((field_[0] >> 1) & 0x7) << 30) | (field_[1] << 22) | ((field_[2] >> 1) << 15) \
                    | (field_[3] << 7) | (field_[4] >> 1)
                value = (value + shift) % PCR_WRAP
                packet[at:at + 5] = bytes([
                    (field_[0] & 0xF1) | ((value >> 29) & 0x0E), (value >> 22) & 0xFF,
                    ((value >> 14) & 0xFE) | 1, (value >> 7) & 0xFF, ((value << 1) & 0xFE) | 1,
                ])


@dataclass
class _Session:
    """One client's RTP stream: continuity counters, sequence numbers and timestamps of its own."""

    clip: Clip
    channel: int = 0  # TCP: the interleaved channel
    udp: socket.socket | None = None  # UDP: our socket, and where the client wants the packets
    client: tuple[str, int] | None = None
    ssrc: int = field(default_factory=lambda: secrets.randbits(32))
    sequence: int = field(default_factory=lambda: secrets.randbits(16))
    counters: dict[int, int] = field(default_factory=dict)
    sent: int = 0  # frames sent

    def packets(self, index: int) -> list[bytes]:
        """The RTP packets of the session's next frame, clip frame ``index``."""
        clip = self.clip
        # Clip frame ``index`` plays as the session's frame ``sent``: its timestamps move there.
        shift = round((self.sent - index) * PTS_HZ / clip.fps)
        data = bytearray(clip.frames[index])
        for offset in range(0, len(data), TS_PACKET):
            packet = data[offset:offset + TS_PACKET]
            _shift_timestamps(packet, shift)
            if packet[3] & 0x10:  # has payload: the continuity counter counts it
                pid = ((packet[1] & 0x1F) << 8) | packet[2]
                counter = self.counters.get(pid, -1) + 1 & 0xF
                self.counters[pid] = counter
                packet[3] = (packet[3] & 0xF0) | counter
            data[offset:offset + TS_PACKET] = packet
        timestamp = round(self.sent * PTS_HZ / clip.fps) & 0xFFFFFFFF
        chunk = TS_PACKET * TS_PER_RTP
        out = []
        for offset in range(0, len(data), chunk):
            last = offset + chunk >= len(data)
            header = struct.pack("!BBHII", 0x80, (0x80 if last else 0) | 33, self.sequence, timestamp, self.ssrc)
            self.sequence = (self.sequence + 1) & 0xFFFF
            out.append(header + data[offset:offset + chunk])
        self.sent += 1
        return out

    def send(self, conn: socket.socket, index: int) -> None:
        """Send clip frame ``index``: interleaved on the RTSP connection, or over UDP."""
        packets = self.packets(index)
        if self.udp is None:
            conn.sendall(b"".join(b"$" + bytes([self.channel]) + struct.pack("!H", len(p)) + p for p in packets))
            return
        for packet in packets:
            self.udp.sendto(packet, self.client)

    def close(self) -> None:
        if self.udp is not None:
            self.udp.close()


class RtspServer:
    """``with RtspServer({"cam": Clip.make()}) as server: cv2.VideoCapture(server.url("cam"))``."""

    def __init__(self, clips: dict[str, Clip], port: int = 0, host: str = "127.0.0.1",
                 credentials: tuple[str, str] | None = None) -> None:
        self.clips = clips
        self.host = host
        self.port = port
        self.credentials = credentials
        self.plays: dict[str, int] = dict.fromkeys(clips, 0)  # PLAY requests served, per path
        self.transports: dict[str, int] = {}  # sessions set up, by transport ("tcp", "udp")
        self.refused: dict[str, int] = {}  # requests answered 401 / 404, by status
        self._paused = threading.Event()
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._nonce = secrets.token_hex(16)

    def url(self, path: str, user: str | None = None, password: str | None = None) -> str:
        auth = f"{quote(user, safe='')}:{quote(password or '', safe='')}@" if user is not None else ""
        return f"rtsp://{auth}{self.host}:{self.port}/{path}"

    @property
    def sessions(self) -> int:
        """Open client connections."""
        with self._lock:
            return len(self._connections)

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> RtspServer:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._spawn(self._accept, listener, name=f"rtsp-accept-{self.port}")
        return self

    def stop(self) -> None:
        """The camera goes away: the port closes and every session ends at once."""
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone would not)
            except OSError:
                pass
            listener.close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(10)
        self._threads.clear()

    def pause(self) -> None:
        """Keep every connection open and answer requests, but send no frame."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target, *args, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed by stop()
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._connections.add(conn)
            self._spawn(self._serve, conn, name=f"rtsp-conn-{self.port}")

    # ---- one client -------------------------------------------------------------------------

    def _serve(self, conn: socket.socket) -> None:
        buffer = bytearray()
        session: _Session | None = None
        playing = False
        playing_since = 0.0
        first = 0  # the clip frame the session started at
        path = ""
        try:
            while True:
                wait = 0.05
                if playing and not self._paused.is_set():
                    due = playing_since + session.sent / session.clip.fps
                    wait = max(0.0, due - time.monotonic())
                    if wait == 0.0:
                        session.send(conn, (first + session.sent) % len(session.clip.frames))
                        continue
                elif playing:  # paused: the live clock runs on without us
                    playing_since += wait
                readable, _, _ = select.select([conn], [], [], min(wait, 0.05))
                if not readable:
                    continue
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
                while (request := _take_request(buffer)) is not None:
                    method, url, headers = request
                    reply, new_session, path = self._answer(method, url, headers, path, session, conn)
                    if new_session is not None and session is None:
                        session = new_session
                    conn.sendall(reply)
                    if method == "PLAY" and session is not None and reply.startswith(b"RTSP/1.0 200"):
                        self.plays[path] += 1
                        clip = session.clip
                        live = int((time.monotonic() * clip.fps)) % len(clip.frames)
                        first = clip.keyframe_at_or_before(live)
                        playing, playing_since = True, time.monotonic()
                    elif method == "TEARDOWN":
                        return
        except OSError:
            return
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()
            if session is not None:
                session.close()

    def _answer(self, method: str, url: str, headers: dict[str, str], path: str, session: _Session | None,
                conn: socket.socket) -> tuple[bytes, _Session | None, str]:
        cseq = headers.get("cseq", "0")
        if method == "OPTIONS":
            return _reply(200, cseq, {"Public": "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER"}), None, path
        if self.credentials and not self._authorized(method, headers.get("authorization", "")):
            self.refused[401] = self.refused.get(401, 0) + 1
            challenge = f'Digest realm="{REALM}", nonce="{self._nonce}"'
            return _reply(401, cseq, {"WWW-Authenticate": challenge}), None, path
        if method in ("DESCRIBE", "SETUP"):
            path = urlsplit(url).path.strip("/").split("/trackID=")[0]
            if path not in self.clips:
                self.refused[404] = self.refused.get(404, 0) + 1
                return _reply(404, cseq), None, path
        if method == "DESCRIBE":
            base = url.rstrip("/") + "/"
            sdp = (f"v=0\r\no=- 0 0 IN IP4 {self.host}\r\ns=rtvi test camera\r\nt=0 0\r\n"
                   "m=video 0 RTP/AVP 33\r\na=rtpmap:33 MP2T/90000\r\na=control:trackID=0\r\n").encode()
            return _reply(200, cseq, {"Content-Base": base, "Content-Type": "application/sdp"}, sdp), None, path
        if method == "SETUP":
            if session is not None:
                return _reply(455, cseq), None, path  # one track, one SETUP
            transport = dict(_field(part) for part in headers.get("transport", "").split(";"))
            if "RTP/AVP/TCP" in transport:
                channel = int(transport.get("interleaved", "0").split("-")[0])
                new = _Session(self.clips[path], channel=channel)
                answer = f"RTP/AVP/TCP;unicast;interleaved={channel}-{channel + 1}"
            elif "client_port" in transport:
                client_port = int(transport["client_port"].split("-")[0])
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                udp.bind((conn.getsockname()[0], 0))
                new = _Session(self.clips[path], udp=udp, client=(conn.getpeername()[0], client_port))
                server_port = udp.getsockname()[1]
                answer = f"RTP/AVP;unicast;client_port={transport['client_port']};server_port={server_port}-{server_port + 1}"
            else:
                return _reply(461, cseq), None, path  # Unsupported Transport
            kind = "udp" if new.udp else "tcp"
            self.transports[kind] = self.transports.get(kind, 0) + 1
            return _reply(200, cseq, {"Transport": answer, "Session": f"{new.ssrc:08x};timeout=60"}), new, path
        if method == "PLAY":
            if session is None:
                return _reply(455, cseq), None, path  # Method Not Valid in This State
            return _reply(200, cseq, {"Session": f"{session.ssrc:08x}", "Range": "npt=0.000-"}), None, path
        if method in ("GET_PARAMETER", "SET_PARAMETER", "TEARDOWN"):
            return _reply(200, cseq), None, path
        return _reply(501, cseq), None, path

    def _authorized(self, method: str, authorization: str) -> bool:
        if not authorization.lower().startswith("digest "):
            return False
        fields = _digest_fields(authorization[7:])
        user, password = self.credentials
        ha1 = _md5(f"{user}:{REALM}:{password}")
        ha2 = _md5(f"{method}:{fields.get('uri', '')}")
        return fields.get("username") == user and fields.get("nonce") == self._nonce and \
            fields.get("response") == _md5(f"{ha1}:{self._nonce}:{ha2}")


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _digest_fields(text: str) -> dict[str, str]:
    fields = {}
    for part in text.split(","):
        key, _, value = part.strip().partition("=")
        fields[key.lower()] = value.strip('"')
    return fields


def _field(part: str) -> tuple[str, str]:
    """``client_port=5000-5001`` -> (``client_port``, ``5000-5001``); ``RTP/AVP/TCP`` -> (it, "")."""
    key, _, value = part.strip().partition("=")
    return key, value


def _take_request(buffer: bytearray) -> tuple[str, str, dict[str, str]] | None:
    """Remove one RTSP request from ``buffer`` (and any interleaved RTCP before it)."""
    while buffer[:1] == b"$":  # the client's RTCP receiver reports: read and dropped
        if len(buffer) < 4:
            return None
        size = struct.unpack("!H", buffer[2:4])[0]
        if len(buffer) < 4 + size:
            return None
        del buffer[:4 + size]
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buffer[:end].decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if len(buffer) < end + 4 + length:
        return None
    del buffer[:end + 4 + length]
    method, url, _ = (head[0].split(" ") + ["", ""])[:3]
    return method, url, headers


_REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 455: "Method Not Valid in This State",
            461: "Unsupported Transport", 501: "Not Implemented"}


def _reply(status: int, cseq: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"RTSP/1.0 {status} {_REASONS[status]}", f"CSeq: {cseq}", "Server: rtvi-test-camera"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--path", action="append", default=[], help="path to serve (repeatable; default: cam)")
    parser.add_argument("--size", default="320x240", help="WxH of the clip")
    parser.add_argument("--fps", type=float, default=25)
    parser.add_argument("--clip", help="an MPEG-TS file to serve instead of a clip made here")
    parser.add_argument("--user", help="require Digest authentication with this user ...")
    parser.add_argument("--password-env", default="RTSP_PASSWORD", help="... and the password in this variable")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    clip = Clip.from_ts(Path(args.clip).read_bytes(), args.fps) if args.clip else \
        Clip.make(width, height, args.fps)
    credentials = (args.user, os.environ[args.password_env]) if args.user else None
    server = RtspServer({path: clip for path in args.path or ["cam"]}, args.port, args.host, credentials).start()
    print(f"serving {len(clip.frames)} frames at {args.fps:g} fps on rtsp://{args.host}:{server.port}/"
          f"{{{','.join(server.clips)}}}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
