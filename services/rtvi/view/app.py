"""`rtvi view`: a live web page of every stream, its latest classified frame and its figures.

Starlette (routing, WebSocket, static files) on uvicorn (ASGI server): small, well kept,
asyncio-native, nothing to build. The page and its scripts are files in ``static/``
served from the package; nothing is fetched from elsewhere at run time.

Live updates go over one WebSocket per page. Every ``1 / update_fps`` seconds the server
looks at each stream and sends what changed since that browser's last update: one binary
message per stream, a 4-byte header length, the header (JSON: the stream's figures and
the labels of the image) and the image bytes as they were read from the frames topic (no
decoding, no re-encoding, no base64). A browser that reads slowly gets fewer updates, not
a backlog: each update carries the newest state. The figures are computed once per tick
for all browsers.

Routes: ``/`` (grid), ``/streams/{id}`` (one stream with its latency chart),
``/api/streams``, ``/api/streams/{id}``, ``/api/streams/{id}/latest.jpg``, ``/api/live``
(WebSocket), ``/livez``, ``/readyz``, ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import time
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from rtvi.errors import BadInput, ExitCode
from rtvi.streaming.kafka_config import check_broker
from rtvi.view import metrics
from rtvi.view.config import ViewConfig
from rtvi.view.reader import Record, TopicReader
from rtvi.view.state import Frame, Summary, ViewState

log = logging.getLogger("rtvi.view")

STATIC = Path(__file__).resolve().parent / "static"
# The page shows data from the broker (stream ids, labels, errors): scripts and styles come
# from this server only, images from blobs the page made, connections back to this server.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; connect-src 'self'; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# Chart points carried by each update of the one-stream page (the open second and the last closed one).
HISTORY_TAIL = 2


def pack(header: dict[str, Any], image: bytes = b"") -> bytes:
    """One update: a 4-byte big-endian header length, the JSON header, the image bytes as they are."""
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return len(encoded).to_bytes(4, "big") + encoded + image


@dataclass
class Snapshot:
    """The figures of every stream at one tick, shared by every browser."""

    at: float
    summaries: dict[str, Summary]
    headers: dict[tuple[str, bool], dict[str, Any]] = field(default_factory=dict)  # (stream, with history)


class Hub:
    """The view's state, fed by the reader and read by the routes, all on the event loop."""

    def __init__(self, config: ViewConfig) -> None:
        self.config = config
        self.state = ViewState(
            stale_after_s=config.stale_after_s, window_s=config.window_s, history_s=config.history_s,
            frame_budget_bytes=config.frame_buffer_mb * 1024 * 1024, max_streams=config.max_streams,
        )
        self._snapshot: Snapshot | None = None

    def ingest(self, records: list[Record]) -> None:
        now = time.monotonic()
        ignored_before = self.state.ignored_records
        frames = 0
        for record in records:
            if isinstance(record, Frame):
                frames += 1
                self.state.add_frame(record, now)
            else:
                self.state.add_prediction(record, now)
        ignored = self.state.ignored_records - ignored_before
        metrics.RECORDS.labels("frames", "ok").inc(frames)
        metrics.RECORDS.labels("predictions", "ok").inc(len(records) - frames)
        if ignored:
            metrics.RECORDS.labels("all", "ignored").inc(ignored)
        metrics.STREAMS.set(len(self.state.streams))
        metrics.BUFFERED_BYTES.set(self.state.buffered_bytes)

    def snapshot(self) -> Snapshot:
        """The current tick's figures; computed at most twice per update interval, whatever the browsers."""
        now = time.monotonic()
        if self._snapshot is None or now - self._snapshot.at >= 0.5 / self.config.update_fps:
            self._snapshot = Snapshot(now, {s.stream: s for s in self.state.summaries(now)})
        return self._snapshot

    def stream_json(self, stream: str) -> dict[str, Any]:
        return {**self.state.summary(stream, time.monotonic()).as_dict(), "history": self.state.history(stream),
                "history_s": self.config.history_s}


async def _send_updates(websocket: WebSocket, hub: Hub, only: str | None) -> None:
    """Every update interval, one message per stream whose figures or image changed."""
    sent_header: dict[str, dict[str, Any]] = {}
    sent_picture: dict[str, int] = {}
    interval = 1.0 / hub.config.update_fps
    while True:
        started = time.monotonic()
        snapshot = hub.snapshot()
        for stream, summary in snapshot.summaries.items():
            if only is not None and stream != only:
                continue
            state = hub.state.streams.get(stream)
            if state is None:
                continue
            header = snapshot.headers.get((stream, only is not None))
            if header is None:
                header = snapshot.headers[stream, only is not None] = summary.as_dict()
                if only is not None:
                    header["history"] = hub.state.history(stream)[-HISTORY_TAIL:]
            picture = state.picture if state.picture_version != sent_picture.get(stream, 0) else None
            if picture is None and sent_header.get(stream) == header:
                continue
            message = dict(header)
            if picture is not None:
                message["image"] = {"frame": picture.frame, "type": picture.content_type,
                                    "top": [{"label": t.label, "score": t.score} for t in picture.top]}
                sent_picture[stream] = state.picture_version
            await websocket.send_bytes(pack(message, picture.data if picture is not None else b""))
            metrics.UPDATES.labels("yes" if picture is not None else "no").inc()
            sent_header[stream] = header
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))


def allowed_hosts(config: ViewConfig) -> list[str]:
    """Host names the page answers to. Bound to loopback, only loopback names: a web page
    elsewhere cannot then reach it by pointing a DNS name of its own at 127.0.0.1 (DNS
    rebinding) and read the cameras."""
    if config.allowed_hosts:
        return [host.strip() for host in config.allowed_hosts.split(",") if host.strip()]
    try:
        loopback = ip_address(config.host).is_loopback
    except ValueError:
        loopback = config.host == "localhost"
    return ["localhost", "127.0.0.1", "::1", "[::1]"] if loopback else ["*"]


def build_app(config: ViewConfig, hub: Hub, reader: TopicReader) -> Starlette:
    def page(name: str):
        async def endpoint(request: Request) -> Response:
            return FileResponse(STATIC / name, headers=SECURITY_HEADERS)
        return endpoint

    def known_stream(request: Request) -> str:
        stream = request.path_params["stream"]
        if stream not in hub.state.streams:
            raise LookupError(stream)
        return stream

    async def api_streams(request: Request) -> Response:
        return JSONResponse([s.as_dict() for s in hub.state.summaries(time.monotonic())])

    async def api_stream(request: Request) -> Response:
        try:
            return JSONResponse(hub.stream_json(known_stream(request)))
        except LookupError:
            return JSONResponse({"error": f"no stream {request.path_params['stream']!r}"}, status_code=404)

    async def latest_image(request: Request) -> Response:
        try:
            picture = hub.state.streams[known_stream(request)].picture
        except LookupError:
            picture = None
        if picture is None:
            return PlainTextResponse("no classified frame of this stream yet\n", status_code=404)
        return Response(picture.data, media_type=picture.content_type,
                        headers={"Cache-Control": "no-store", "X-Rtvi-Frame": str(picture.frame),
                                 "X-Content-Type-Options": "nosniff"})

    async def live(websocket: WebSocket) -> None:
        origin = websocket.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != websocket.headers.get("host"):
            # Browsers let any site open a WebSocket to any address: only the view's own page may.
            await websocket.close(code=1008)
            return
        await websocket.accept()
        metrics.CLIENTS.inc()
        sender = asyncio.create_task(_send_updates(websocket, hub, websocket.query_params.get("stream")))
        try:
            # The page sends nothing: this waits for it to go away, while the sender runs.
            receiver = asyncio.create_task(websocket.receive())
            done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            receiver.cancel()
            if sender in done and not isinstance(sender.exception(), (WebSocketDisconnect, OSError, RuntimeError)):
                sender.result()  # a bug: let it be logged
        finally:
            sender.cancel()
            metrics.CLIENTS.dec()

    def health(check):
        async def endpoint(request: Request) -> Response:
            ok, reason = check()
            return PlainTextResponse(f"{'ok' if ok else 'fail'}: {reason}\n", status_code=200 if ok else 503)
        return endpoint

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    hosts = allowed_hosts(config)
    middleware = [] if hosts == ["*"] else [Middleware(TrustedHostMiddleware, allowed_hosts=hosts)]
    return Starlette(middleware=middleware, routes=[
        Route("/", page("index.html")),
        Route("/streams/{stream:path}", page("stream.html")),
        Route("/api/streams", api_streams),
        Route("/api/streams/{stream:path}/latest.jpg", latest_image),
        Route("/api/streams/{stream:path}", api_stream),
        WebSocketRoute("/api/live", live),
        Route("/livez", health(reader.live)),
        Route("/readyz", health(reader.ready)),
        Route("/metrics", prometheus),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ])


class _Server(uvicorn.Server):
    """uvicorn's server, but a SIGTERM or SIGINT ends `rtvi view` with exit 0 after a clean
    shutdown (uvicorn re-raises the signal once it is done, which would kill the process)."""

    @contextlib.contextmanager
    def capture_signals(self):
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._exit)
        try:
            yield
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    def _exit(self) -> None:
        self.force_exit = self.should_exit  # a second signal stops waiting for connections
        self.should_exit = True


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, or one line saying why not (a port in use, an address not here)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BadInput(f"cannot listen on {host}:{port}: {exc.strerror}; choose another --host or --port") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def run_view(config: ViewConfig) -> ExitCode:
    sock = listen(config.host, config.port)
    await asyncio.to_thread(check_broker, config, config.connect_timeout_s)  # BrokerUnreachable: exit 4
    hub = Hub(config)
    server: _Server | None = None

    def stop() -> None:
        if server is not None:
            server.should_exit = True

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # a line per connection is not news
    reader = TopicReader(config, hub.ingest, asyncio.get_running_loop(), on_fatal=stop)
    server = _Server(uvicorn.Config(
        build_app(config, hub, reader), log_config=None, access_log=False, lifespan="off",
        ws="websockets-sansio", ws_per_message_deflate=False,  # JPEG does not compress: deflate would only burn CPU
        timeout_graceful_shutdown=2,
    ))
    reader.start()
    host, port = sock.getsockname()[:2]
    log.info("view on http://%s:%d (frames from %s, predictions from %s, at %s)", host, port, config.topic,
             config.predictions_topic, config.bootstrap_servers)
    try:
        await server.serve(sockets=[sock])
    finally:
        await asyncio.to_thread(reader.stop)
    if reader.fatal is not None:
        raise reader.fatal
    return ExitCode.OK
