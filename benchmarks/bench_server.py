"""Server throughput against the model-only ceiling, measured side by side in one run.

- The ceiling: the same model, precision, batch size and threads, timed in this
  process on ready tensors (no decoding, no gRPC), on a worker thread like the server's.
- The server: `rtvi serve` in a subprocess, driven by concurrent v2 clients that each
  send 640x480 JPEG frames, several per request, one request at a time.

The two alternate in windows (ceiling, server, ceiling, server, ...) and the medians
are compared, because this machine is shared and its speed drifts by 20% or more.

    python benchmarks/bench_server.py            # resnet18, bf16, 2 instances x 1 thread, 8 clients
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import ModelCeiling, print_table, write_result  # noqa: E402

from rtvi._private.net import free_port  # noqa: E402


def synthetic_jpegs(count: int, width: int = 640, height: int = 480) -> list[bytes]:
    from rtvi.streaming.sources import SyntheticSource

    source = SyntheticSource(width=width, height=height)
    return [cv2.imencode(".jpg", source.frame(i), [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes() for i in range(count)]


class Load:
    """Concurrent v2 clients, each sending one request of several frames at a time."""

    def __init__(self, address: str, model: str, frames: list[bytes], clients: int, per_request: int) -> None:
        from rtvi.protocol.client import InferenceClient

        self.client = InferenceClient(address, model)
        self.frames, self.clients, self.per_request = frames, clients, per_request
        self.latencies: list[float] = []

    async def ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not await self.client.ready():
            if time.monotonic() > deadline:
                raise SystemExit("server did not become ready")
            await asyncio.sleep(0.2)

    async def window(self, seconds: float, record: bool = True) -> float:
        """Images/s the server answered during one window."""
        done = 0
        until = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            nonlocal done
            i = offset
            while time.perf_counter() < until:
                batch = [self.frames[(i + j) % len(self.frames)] for j in range(self.per_request)]
                started = time.perf_counter()
                await self.client.classify(batch, top_k=5)
                if record:
                    self.latencies.append(time.perf_counter() - started)
                done += self.per_request
                i += self.per_request

        started = time.perf_counter()
        await asyncio.gather(*(worker(c * 7) for c in range(self.clients)))
        return done / (time.perf_counter() - started)


async def measure(args, ceiling: ModelCeiling, address: str) -> tuple[list[float], list[float], list[float]]:
    load = Load(address, args.model, synthetic_jpegs(64), args.clients, args.frames_per_request)
    await load.ready()
    await load.window(3, record=False)  # warm-up
    loop = asyncio.get_running_loop()
    ceilings, servers = [], []
    for round_ in range(args.rounds):
        ceilings.append(await loop.run_in_executor(None, ceiling.window, args.window))
        servers.append(await load.window(args.window))
        print(f"round {round_ + 1}/{args.rounds}: ceiling {ceilings[-1]:.1f} img/s, server {servers[-1]:.1f} img/s",
              flush=True)
    await load.client.close()
    return ceilings, servers, load.latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--instances", type=int, default=os.cpu_count(), help="server model instances")
    parser.add_argument("--threads", type=int, default=1, help="server torch threads per instance")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--frames-per-request", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=float, default=5.0, help="seconds per measurement window")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    # The ceiling gets every compute thread the server has (instances x threads) in one
    # instance; measured on these 2 cores, 1 x 2 and 2 x 1 reach the same model-only rate.
    ceiling = ModelCeiling(args.model, args.precision, args.max_batch_size, args.instances * args.threads)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "rtvi", "--log-level", "warning", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--metrics-port", "0", "--weights", "none", "--model", args.model, "--precision", args.precision,
         "--max-batch-size", str(args.max_batch_size), "--threads", str(args.threads),
         "--instances", str(args.instances), "--device", args.device],
    )
    try:
        ceilings, servers, latencies = asyncio.run(measure(args, ceiling, f"127.0.0.1:{port}"))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        ceiling.close()
    ceiling_rate, server_rate = statistics.median(ceilings), statistics.median(servers)
    p50, p95 = (float(np.percentile(latencies, q)) * 1000 for q in (50, 95))
    ratio = server_rate / ceiling_rate
    print_table(
        f"rtvi serve: {args.model} {args.precision} channels_last, max batch {args.max_batch_size}, "
        f"{args.instances} instances x {args.threads} threads, {args.clients} clients x {args.frames_per_request} "
        "frames of 640x480 JPEG",
        [
            ("model-only ceiling, median (img/s)", f"{ceiling_rate:.1f}  (windows {min(ceilings):.0f}-{max(ceilings):.0f})"),
            ("server throughput, median (img/s)", f"{server_rate:.1f}  (windows {min(servers):.0f}-{max(servers):.0f})"),
            ("server / ceiling", f"{ratio:.1%}"),
            ("request latency p50 / p95 (ms)", f"{p50:.0f} / {p95:.0f}"),
        ],
    )
    write_result("server", {
        "benchmark": "server", "args": vars(args), "ceiling_img_s": ceiling_rate, "server_img_s": server_rate,
        "ceiling_windows": ceilings, "server_windows": servers, "ratio": ratio,
        "request_p50_ms": p50, "request_p95_ms": p95,
    })


if __name__ == "__main__":
    main()
