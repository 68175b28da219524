"""Server throughput against the model-only ceiling, for every engine and precision this
machine runs natively, measured side by side in one run.

For each configuration (engine x precision x model):
- the ceiling: the same model on rtvi's own engine, same precision and batch size, on
  ready tensors (no decoding, no gRPC), on a worker thread like the server's, with every
  usable CPU as intra-op threads;
- the server: `rtvi serve` in a subprocess (instances and threads auto), driven by 8
  concurrent v2 clients that each send 640x480 JPEG frames, several per request, one
  request at a time.
Ceiling and server alternate in windows and the medians are compared, because a shared
machine's speed drifts by 20% or more.

Configurations: torch fp32 (always); torch bf16 on CPUs with native bf16 (AVX512-BF16 or
AMX; never emulated); torch fp16 on CUDA; with --onnx-dir (an fp32 ONNX model directory,
e.g. from `rtvi export`) ONNX Runtime fp32 and OpenVINO fp32 (bf16 where native); with
--int8-dir (`rtvi export --int8`) ONNX Runtime int8 and OpenVINO int8. OpenVINO runs only
when installed (`rtvi[openvino]`).

    python benchmarks/bench_server.py --onnx-dir models/resnet18 --int8-dir models/resnet18-int8
    python benchmarks/bench_server.py --rounds 1 --window 0.5 --warmup 0.5 --out /tmp/smoke.json   # smoke run

The table ends with the acceptance ratios: the int8 ONNX Runtime server against the torch
fp32 server (target >= 2.5x) and each server against its own ceiling (target >= 85%).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import ModelCeiling, print_table, write_result  # noqa: E402

from rtvi.net import free_port  # noqa: E402


@dataclass(frozen=True)
class Config:
    label: str  # e.g. "onnxruntime int8"
    model: str  # architecture name or model directory
    engine: str
    precision: str  # what --precision gets ("auto" for an int8 artifact: it runs as stored)


def configurations(args) -> list[Config]:
    from rtvi.serving.hardware import cpu_info

    native_bf16 = cpu_info().native_bf16
    cuda = _torch_cuda()
    configs = [Config("torch fp32", args.model, "torch", "fp32")]
    if native_bf16 or cuda:
        configs.append(Config("torch bf16", args.model, "torch", "bf16"))
    if cuda:
        configs.append(Config("torch fp16", args.model, "torch", "fp16"))
    openvino = importlib.util.find_spec("openvino") is not None
    if args.onnx_dir:
        configs.append(Config("onnxruntime fp32", args.onnx_dir, "onnxruntime", "fp32"))
        if openvino:
            configs.append(Config("openvino fp32", args.onnx_dir, "openvino", "fp32"))
            if native_bf16:
                configs.append(Config("openvino bf16", args.onnx_dir, "openvino", "bf16"))
    if args.int8_dir:
        configs.append(Config("onnxruntime int8", args.int8_dir, "onnxruntime", "auto"))
        if openvino:
            configs.append(Config("openvino int8", args.int8_dir, "openvino", "auto"))
    wanted = {name.strip() for name in args.only.split(",")} if args.only else None
    return [c for c in configs if wanted is None or c.label in wanted]


def _torch_cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def synthetic_jpegs(count: int, width: int = 640, height: int = 480) -> list[bytes]:
    from rtvi.streaming.producer.sources.synthetic import SyntheticSource

    source = SyntheticSource(width=width, height=height)
    return [cv2.imencode(".jpg", source.frame(i), [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes() for i in range(count)]


class Load:
    """Concurrent v2 clients, each sending one request of several frames at a time."""

    def __init__(self, address: str, model: str, frames: list[bytes], clients: int, per_request: int) -> None:
        from rtvi.protocol.client import InferenceClient

        self.client = InferenceClient(address, model)
        self.frames, self.clients, self.per_request = frames, clients, per_request
        self.latencies: list[float] = []

    async def ready(self, server: subprocess.Popen, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not await self.client.ready():
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server for {self.client.model} did not become ready")
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


def served_name(model: str) -> str:
    return os.path.basename(os.path.normpath(model))


def start_server(args, config: Config, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rtvi", "--log-level", "warning", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--metrics-port", "0", "--weights", "none", "--model", config.model, "--engine", config.engine,
         "--precision", config.precision, "--max-batch-size", str(args.max_batch_size),
         "--instances", str(args.instances), "--threads", str(args.threads)],
    )


async def measure(args, config: Config, ceiling: ModelCeiling, server: subprocess.Popen, address: str) -> dict:
    load = Load(address, served_name(config.model), synthetic_jpegs(64), args.clients, args.frames_per_request)
    await load.ready(server)
    await load.window(args.warmup, record=False)
    loop = asyncio.get_running_loop()
    ceilings, servers = [], []
    for round_ in range(args.rounds):
        ceilings.append(await loop.run_in_executor(None, ceiling.window, args.window))
        servers.append(await load.window(args.window))
        print(f"{config.label} round {round_ + 1}/{args.rounds}: ceiling {ceilings[-1]:.1f} img/s, "
              f"server {servers[-1]:.1f} img/s", flush=True)
    await load.client.close()
    p50, p95 = (float(np.percentile(load.latencies, q)) * 1000 for q in (50, 95))
    ceiling_rate, server_rate = statistics.median(ceilings), statistics.median(servers)
    return {**asdict(config), "precision": ceiling.precision, "ceiling_img_s": ceiling_rate,
            "server_img_s": server_rate, "ratio": server_rate / ceiling_rate, "ceiling_windows": ceilings,
            "server_windows": servers, "request_p50_ms": p50, "request_p95_ms": p95}


def run_config(args, config: Config, cpus: int) -> dict:
    ceiling = ModelCeiling(config.model, config.precision, args.max_batch_size, cpus, engine=config.engine)
    port = free_port()
    server = start_server(args, config, port)
    try:
        return asyncio.run(measure(args, config, ceiling, server, f"127.0.0.1:{port}"))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        ceiling.close()


def acceptance(results: list[dict]) -> list[tuple[str, str]]:
    by_label = {r["label"]: r for r in results}
    rows = []
    if "onnxruntime int8" in by_label and "torch fp32" in by_label:
        speedup = by_label["onnxruntime int8"]["server_img_s"] / by_label["torch fp32"]["server_img_s"]
        rows.append(("int8 ONNX server / torch fp32 server (>= 2.5x)", f"{speedup:.2f}x"))
    worst = min(results, key=lambda r: r["ratio"])
    rows.append(("lowest server / ceiling (>= 85%)", f"{worst['ratio']:.1%} ({worst['label']})"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18", help="torchvision architecture for the torch configurations")
    parser.add_argument("--onnx-dir", default="", help="fp32 ONNX model directory (rtvi export)")
    parser.add_argument("--int8-dir", default="", help="int8 ONNX model directory (rtvi export --int8)")
    parser.add_argument("--only", default="", help="comma-separated labels to run, e.g. 'torch fp32,onnxruntime int8'")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--instances", type=int, default=0, help="server model instances (0 = auto)")
    parser.add_argument("--threads", type=int, default=0, help="server threads per instance (0 = auto)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--frames-per-request", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--window", type=float, default=5.0, help="seconds per measurement window")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before the first window")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/server.json)")
    args = parser.parse_args()

    from rtvi.serving.hardware import available_cpus

    cpus = available_cpus()
    configs = configurations(args)
    if not (args.onnx_dir and args.int8_dir):
        print("note: without --onnx-dir and --int8-dir only the torch configurations run", flush=True)
    results = [run_config(args, config, cpus) for config in configs]
    rows = [(f"{r['label']} ({Path(r['model']).name})",
             f"ceiling {r['ceiling_img_s']:7.1f}  server {r['server_img_s']:7.1f} img/s  {r['ratio']:6.1%}  "
             f"p50/p95 {r['request_p50_ms']:.0f}/{r['request_p95_ms']:.0f} ms") for r in results]
    print_table(
        f"rtvi serve, max batch {args.max_batch_size}, instances/threads {args.instances or 'auto'}/"
        f"{args.threads or 'auto'}, {args.clients} clients x {args.frames_per_request} frames of 640x480 JPEG, "
        f"ceiling with {cpus} threads",
        rows + acceptance(results),
    )
    write_result("server", {"benchmark": "server", "args": {k: str(v) for k, v in vars(args).items()},
                            "results": results, "acceptance": dict(acceptance(results))}, args.out)


if __name__ == "__main__":
    main()
