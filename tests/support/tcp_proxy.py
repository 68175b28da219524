"""A loopback TCP proxy that injects network faults between two real processes.

It runs its own asyncio loop on a thread, so a synchronous test can flip faults while
the processes behind it keep working:

- :meth:`TcpProxy.reset` closes every open connection with a TCP RST;
- ``blackhole = True`` keeps connections open (and accepts new ones) but forwards
  nothing either way, like a network that drops every packet: the bytes are held, as
  TCP would retransmit them, and flow again when it is cleared (unless a side gave up
  and closed the connection first);
- ``latency_s`` delays every chunk by that much, in order, in both directions;
- ``bytes_per_s`` throttles each direction to that bandwidth.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable

from rtvi.net import free_port

_CHUNK = 64 * 1024


class TcpProxy:
    """``with TcpProxy(target_port) as proxy: connect to proxy.port``."""

    def __init__(self, target_port: int, port: int | None = None, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self.blackhole = False
        self.latency_s = 0.0
        self.bytes_per_s = 0.0
        self.connections_total = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"tcp-proxy-{self.port}", daemon=True)
        self._server: asyncio.base_events.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def clear(self) -> None:
        """Back to a transparent proxy."""
        self.blackhole, self.latency_s, self.bytes_per_s = False, 0.0, 0.0

    def reset(self) -> int:
        """RST every open connection (both sides); returns how many were cut."""
        return self._call(self._reset_all)

    def _call(self, fn: Callable[[], Awaitable]):
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(10)

    async def _reset_all(self) -> int:
        writers = list(self._writers)
        for writer in writers:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                # Linger 0: close() sends RST instead of FIN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        self._writers.clear()
        return len(writers) // 2

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections_total += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, upstream_writer}
        try:
            await asyncio.gather(
                self._pump(client_reader, upstream_writer), self._pump(upstream_reader, client_writer),
                return_exceptions=True,
            )
        finally:
            for writer in (client_writer, upstream_writer):
                self._writers.discard(writer)
                writer.transport.abort()

    async def _while_blackholed(self) -> None:
        while self.blackhole:
            await asyncio.sleep(0.02)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction, applying the current faults to every chunk, in order."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._while_blackholed()
                writer.write(data)
                await writer.drain()
                if self.bytes_per_s:
                    await asyncio.sleep(len(data) / self.bytes_per_s)

        sender = asyncio.create_task(deliver())
        try:
            while data := await reader.read(_CHUNK):
                await self._while_blackholed()
                queue.put_nowait((time.monotonic() + self.latency_s, data))
            queue.put_nowait(None)
            await sender
        finally:
            sender.cancel()
            writer.transport.abort()

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._serve)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            await self._reset_all()

        if self._thread.is_alive():
            self._call(close)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
