"""Server throughput against the model-only ceiling, measured in one run.

1. The ceiling: the same model, precision, batch size and threads, timed in this
   process on ready tensors (no decoding, no gRPC).
2. The server: `rtvi serve` in a subprocess, driven by concurrent v2 clients that each
   send 640x480 JPEG frames, several per request, one request at a time.

    python benchmarks/bench_server.py            # resnet18, bf16, 8 clients
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import free_port, model_ceiling, print_table, write_result  # noqa: E402


def synthetic_jpegs(count: int, width: int = 640, height: int = 480) -> list[bytes]:
    from rtvi.streaming.sources import SyntheticSource

    source = SyntheticSource(width=width, height=height)
    return [cv2.imencode(".jpg", source.frame(i), [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes() for i in range(count)]


async def drive(address: str, model: str, frames: list[bytes], clients: int, per_request: int, seconds: float):
    from rtvi.protocol.client import InferenceClient

    client = InferenceClient(address, model)
    deadline_ready = time.monotonic() + 120
    while not await client.ready():
        if time.monotonic() > deadline_ready:
            raise SystemExit("server did not become ready")
        await asyncio.sleep(0.2)
    latencies: list[float] = []
    done = 0

    async def worker(offset: int, until: float, record: bool):
        nonlocal done
        i = offset
        while time.perf_counter() < until:
            batch = [frames[(i + j) % len(frames)] for j in range(per_request)]
            started = time.perf_counter()
            await client.classify(batch, top_k=5)
            if record:
                latencies.append(time.perf_counter() - started)
                done += per_request
            i += per_request

    warm_until = time.perf_counter() + 3
    await asyncio.gather(*(worker(c * 7, warm_until, False) for c in range(clients)))
    started = time.perf_counter()
    await asyncio.gather(*(worker(c * 7, started + seconds, True) for c in range(clients)))
    elapsed = time.perf_counter() - started
    await client.close()
    return done / elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--frames-per-request", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    ceiling_args = (args.model, args.precision, args.max_batch_size, args.threads, args.seconds)
    before = model_ceiling(*ceiling_args)
    print(f"model-only ceiling: {before:.1f} img/s")

    frames = synthetic_jpegs(64)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "rtvi", "--log-level", "warning", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--metrics-port", "0", "--weights", "none", "--model", args.model, "--precision", args.precision,
         "--max-batch-size", str(args.max_batch_size), "--threads", str(args.threads), "--device", args.device],
    )
    try:
        rate, latencies = asyncio.run(
            drive(f"127.0.0.1:{port}", args.model, frames, args.clients, args.frames_per_request, args.seconds)
        )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    # Measured again after the server run; the higher of the two is the ceiling, so a
    # noisy neighbour during one measurement cannot flatter the ratio.
    after = model_ceiling(*ceiling_args)
    ceiling = max(before, after)
    p50, p95 = (float(np.percentile(latencies, q)) * 1000 for q in (50, 95))
    ratio = rate / ceiling
    print_table(
        f"rtvi serve: {args.model} {args.precision} channels_last, max batch {args.max_batch_size}, "
        f"{args.threads} threads, {args.clients} clients x {args.frames_per_request} frames of 640x480 JPEG",
        [
            ("model-only ceiling (img/s)", f"{ceiling:.1f}  (before {before:.1f}, after {after:.1f})"),
            ("server throughput (img/s)", f"{rate:.1f}"),
            ("server / ceiling", f"{ratio:.1%}"),
            ("request latency p50 / p95 (ms)", f"{p50:.0f} / {p95:.0f}"),
        ],
    )
    write_result("server", {
        "benchmark": "server", "args": vars(args), "ceiling_img_s": ceiling, "ceiling_before_img_s": before, "ceiling_after_img_s": after, "server_img_s": rate,
        "ratio": ratio, "request_p50_ms": p50, "request_p95_ms": p95,
    })


if __name__ == "__main__":
    main()
