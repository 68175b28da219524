"""Follow a headless Service's pods: a new channel when the name's addresses change.

gRPC's DNS resolver looks a name up when a channel first connects and afterwards only
when a connection drops (gRPC's maintainers point at the server's max connection age for
the rest). Behind a Kubernetes headless Service that means: a pod that turns Ready after
the consumer connected (a second replica that warmed up later, an HPA scale-up) gets no
calls until the server recycles a connection, minutes later. The node tests saw exactly
that: one inference pod classified all 160 frames and the other none.

``FollowingChannel`` asks the name's addresses itself, every ``interval_s`` (5 s: one
A/AAAA lookup, answered by the cluster DNS from memory), and when the answer differs from
the addresses the current channel was made for, it makes a new channel for the same
target (which resolves afresh), waits until it is READY (bounded) and swaps it in: new
calls go to the new channel, calls in flight finish on the old one, which is closed after
a grace period. gRPC shares connections (subchannels) between channels of the same target
and arguments, so the swap reuses the connections to the pods that stayed. An empty
answer (no pod Ready, a DNS failure) never replaces a channel: the old one still holds
whatever connections work and re-resolves on its own when they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable

import grpc
from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger("rtvi.protocol")

# Target schemes that gRPC does not resolve through DNS (see gRPC's naming documentation).
_NOT_DNS = ("unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:", "xds:", "google-c2p:")

ADDRESSES = Gauge("rtvi_inference_client_addresses",
                  "Addresses the inference service's name resolved to at the last lookup", ["target"])
CHANNELS = Counter("rtvi_inference_client_channel_swaps_total",
                   "New inference channels taken into use because the name's addresses changed", ["target"])
LOOKUP_SECONDS = Histogram("rtvi_inference_client_lookup_duration_seconds",
                           "DNS lookups of the inference service's name", ["target"],
                           buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5))

Resolve = Callable[[str, int], Awaitable[frozenset[str]]]


def dns_name(target: str) -> tuple[str, int] | None:
    """``(host, port)`` of a gRPC target that resolves a host name through the system's DNS;
    None for IP addresses, sockets, other schemes and ``dns://<server>/`` targets (which ask
    a DNS server of their own)."""
    if target.startswith(_NOT_DNS):
        return None
    if target.startswith("dns:"):
        rest = target.removeprefix("dns:")
        if rest.startswith("//"):
            authority, _, rest = rest[2:].partition("/")
            if authority:
                return None
        target = rest
    if target.startswith("["):  # [v6]:port
        return None
    host, _, port = target.rpartition(":")
    if not host:
        host, port = target, "443"  # gRPC's default port
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    return (host, int(port)) if port.isdigit() and host else None


async def lookup(host: str, port: int) -> frozenset[str]:
    """The addresses ``host`` resolves to now (the system resolver, as for any lookup in the pod)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return frozenset(info[4][0] for info in infos)


class FollowingChannel:
    """The channel to call through now, replaced when the target's addresses change."""

    def __init__(self, target: str, make_channel: Callable[[], grpc.aio.Channel], *, interval_s: float = 5.0,
                 ready_timeout_s: float = 5.0, grace_s: float = 30.0, resolve: Resolve = lookup) -> None:
        self.target = target
        self._make_channel = make_channel
        self._name = dns_name(target)
        self._interval_s = interval_s
        self._ready_timeout_s = ready_timeout_s
        self._grace_s = grace_s
        self._resolve = resolve
        self._current = make_channel()
        # What the current channel was made for. Unknown at first: what gRPC's own lookup found
        # is not exposed, so the first answer always brings a channel made for it.
        self._addresses: frozenset[str] = frozenset()
        self._follower: asyncio.Task | None = None
        self._retiring: set[asyncio.Task] = set()

    def channel(self) -> grpc.aio.Channel:
        """The channel for the next call; starts following the name on first use in an event loop."""
        if self._follower is None and self._name is not None:
            with contextlib.suppress(RuntimeError):  # no running loop: a later call starts it
                self._follower = asyncio.get_running_loop().create_task(self._follow(*self._name))
        return self._current

    async def close(self) -> None:
        """Stop following; close the current channel at once and any retiring ones."""
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        await self._current.close()
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)

    async def _follow(self, host: str, port: int) -> None:
        while True:
            addresses = await self._lookup(host, port)
            if addresses and addresses != self._addresses:
                await self._swap(addresses)
            await asyncio.sleep(self._interval_s)

    async def _lookup(self, host: str, port: int) -> frozenset[str]:
        started = time.perf_counter()
        try:
            addresses = await asyncio.wait_for(self._resolve(host, port), self._interval_s)
        except (OSError, ValueError, asyncio.TimeoutError):  # no such name (no pod Ready), DNS down: keep what works
            addresses = frozenset()
        LOOKUP_SECONDS.labels(self.target).observe(time.perf_counter() - started)
        ADDRESSES.labels(self.target).set(len(addresses))
        return addresses

    async def _swap(self, addresses: frozenset[str]) -> None:
        """Take a new channel into use once it is READY; keep the old one if it does not get there."""
        started = time.perf_counter()
        candidate = self._make_channel()
        try:
            await asyncio.wait_for(candidate.channel_ready(), self._ready_timeout_s)
        except asyncio.TimeoutError:
            log.warning("%s now resolves to %s, but a channel to them was not ready within %.0f s; keeping the "
                        "current one", self.target, ", ".join(sorted(addresses)), self._ready_timeout_s)
            await candidate.close()
            return
        except asyncio.CancelledError:  # the client is closing
            await candidate.close()
            raise
        old, self._current = self._current, candidate
        log.info("%s: addresses %s -> %s; new channel ready in %.0f ms", self.target,
                 ", ".join(sorted(self._addresses)) or "(unknown)", ", ".join(sorted(addresses)),
                 (time.perf_counter() - started) * 1000)
        self._addresses = addresses
        CHANNELS.labels(self.target).inc()
        task = asyncio.get_running_loop().create_task(old.close(self._grace_s))  # calls in flight finish there
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
