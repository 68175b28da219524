"""Server throughput against the model-only ceiling, for every engine and precision this
machine runs natively and for what `--engine auto` picks, measured side by side in one run.

For each configuration (engine x precision x model):
- the server: `rtvi serve` in a subprocess (instances and threads auto), driven by 8
  concurrent v2 clients that each send 640x480 JPEG frames, several per request, one
  request at a time;
- the ceiling: the model the server loaded, on the engine and precision it serves with
  (read from its rtvi_inference_model_info metric, so also for `--engine auto`), same
  batch size, on ready tensors (no decoding, no gRPC), on a worker thread like the
  server's, with every usable CPU as intra-op threads.
Every server is started (one after another, each ready before the next starts) and kept
running; then each round takes one ceiling window and one server window of every
configuration in turn, and the medians over the rounds are compared. A shared machine's
speed drifts by 20% or more over minutes, so configurations measured one after another
would compare a quiet spell with a busy one; interleaved, every ratio is between figures
taken across the same span of time.

Configurations: torch fp32 (always); torch bf16 on CPUs with native bf16 (AVX512-BF16 or
AMX; never emulated); torch fp16 on CUDA; `rtvi serve --model resnet18` with default flags
(auto: the ONNX export in the model cache on the engine timed fastest at load), and where
bf16 is native the same with --precision fp32 (what the defaults do on a CPU without it); with
--onnx-dir (an fp32 ONNX model directory, e.g. from `rtvi export`) ONNX Runtime fp32 and
OpenVINO fp32 (bf16 where native); with --int8-dir (`rtvi export --int8`) ONNX Runtime
int8, OpenVINO int8 and `--engine auto` on it. OpenVINO runs only when installed
(`rtvi[openvino]`).

    python benchmarks/bench_server.py --onnx-dir models/resnet18 --int8-dir models/resnet18-int8
    python benchmarks/bench_server.py --rounds 1 --window 0.5 --warmup 0.5 --out /tmp/smoke.json   # smoke run

The table ends with the acceptance ratios, each the median over rounds of the ratio within a
round: `rtvi serve --model resnet18` with default flags against `--engine torch` with its
defaults (target >= 1.3x), the int8 server `--engine auto` picks against the torch fp32 server
(target >= 2.5x), and the lowest server against its own ceiling (target >= 85%).
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
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import ModelCeiling, print_table, write_result  # noqa: E402

from rtvi.net import free_port  # noqa: E402


# The label of `rtvi serve --model NAME` with every flag at its default, of the same in fp32 (what the
# defaults give on a CPU without native bf16, measured here too where bf16 is native), and of
# --engine auto on the int8 model.
DEFAULT_FLAGS = "auto (default flags)"
DEFAULT_FP32 = "auto fp32"
AUTO_INT8 = "auto int8"


@dataclass(frozen=True)
class Config:
    label: str  # e.g. "onnxruntime int8"
    model: str  # architecture name or model directory
    engine: str
    precision: str  # what --precision gets ("auto" for an int8 artifact: it runs as stored)


def torch_default_label(native_bf16: bool, cuda: bool) -> str:
    """The torch row `--engine torch` runs with --precision auto: never an emulated precision."""
    return "torch fp16" if cuda else "torch bf16" if native_bf16 else "torch fp32"


def configurations(args) -> list[Config]:
    from rtvi.serving.hardware import cpu_info

    native_bf16 = cpu_info().native_bf16
    cuda = _torch_cuda()
    configs = [Config("torch fp32", args.model, "torch", "fp32")]
    if native_bf16 or cuda:
        configs.append(Config("torch bf16", args.model, "torch", "bf16"))
    if cuda:
        configs.append(Config("torch fp16", args.model, "torch", "fp16"))
    configs.append(Config(DEFAULT_FLAGS, args.model, "auto", "auto"))
    if native_bf16:
        configs.append(Config(DEFAULT_FP32, args.model, "auto", "fp32"))
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
        configs.append(Config(AUTO_INT8, args.int8_dir, "auto", "auto"))
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


def start_server(args, config: Config, port: int, metrics_port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rtvi", "--log-level", "warning", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--metrics-port", str(metrics_port), "--weights", "none", "--model", config.model,
         "--model-cache", args.model_cache, "--engine", config.engine, "--precision", config.precision,
         "--max-batch-size", str(args.max_batch_size), "--instances", str(args.instances), "--threads", str(args.threads)],
    )


def served_as(metrics_port: int, model: str) -> dict[str, str]:
    """How the server runs ``model``: the labels of its rtvi_inference_model_info metric."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return next(sample.labels for family in text_string_to_metric_families(text) for sample in family.samples
                if sample.name == "rtvi_inference_model_info" and sample.labels["model"] == model)


def ceiling_model(args, config: Config) -> str:
    """The model the ceiling loads: for a torchvision name served as ONNX, its export in the model cache."""
    from rtvi.export import cache

    if config.engine == "torch" or os.path.isdir(config.model):
        return config.model
    found = cache.find(config.model, "none", Path(args.model_cache))
    assert found is not None, f"{config.model} was served, so its export is in {args.model_cache}"
    return str(found)


@dataclass
class Running:
    """One configuration's server, its load and its ceiling, kept up for the whole run."""

    config: Config
    server: subprocess.Popen
    load: Load
    served: dict[str, str]
    ceiling: ModelCeiling
    ceilings: list[float] = field(default_factory=list)
    servers: list[float] = field(default_factory=list)

    def result(self) -> dict:
        p50, p95 = (float(np.percentile(self.load.latencies, q)) * 1000 for q in (50, 95))
        ceiling_rate, server_rate = statistics.median(self.ceilings), statistics.median(self.servers)
        return {**asdict(self.config), "served_engine": self.served["engine"], "precision": self.served["precision"],
                "engine_choice": self.served["engine_choice"], "engine_trial": self.served["engine_trial"],
                "ceiling_img_s": ceiling_rate, "server_img_s": server_rate, "ratio": server_rate / ceiling_rate,
                "ceiling_windows": self.ceilings, "server_windows": self.servers, "request_p50_ms": p50,
                "request_p95_ms": p95}


def stop(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)
    server.wait(60)


async def start(args, config: Config, cpus: int) -> Running:
    """``config``'s server, started and ready, with its load and its ceiling."""
    port, metrics_port = free_port(), free_port()
    server = start_server(args, config, port, metrics_port)
    load = Load(f"127.0.0.1:{port}", served_name(config.model), synthetic_jpegs(64), args.clients,
                args.frames_per_request)
    try:
        await load.ready(server)
        served = served_as(metrics_port, served_name(config.model))
        precision = "auto" if served["precision"] == "int8" else served["precision"]
        ceiling = await asyncio.get_running_loop().run_in_executor(None, lambda: ModelCeiling(
            ceiling_model(args, config), precision, args.max_batch_size, cpus, engine=served["engine"]))
    except BaseException:
        await load.client.close()
        stop(server)
        raise
    print(f"{config.label}: serving on {served['engine']} {served['precision']}"
          + (f" (timed at load: {served['engine_trial']})" if served["engine_trial"] else ""), flush=True)
    return Running(config, server, load, served, ceiling)


async def measure_all(args, configs: list[Config], cpus: int) -> list[dict]:
    running: list[Running] = []
    try:
        for config in configs:
            running.append(await start(args, config, cpus))
        for item in running:
            await item.load.window(args.warmup, record=False)
        loop = asyncio.get_running_loop()
        for round_ in range(args.rounds):
            for item in running:
                item.ceilings.append(await loop.run_in_executor(None, item.ceiling.window, args.window))
                item.servers.append(await item.load.window(args.window))
                print(f"round {round_ + 1}/{args.rounds} {item.config.label}: ceiling {item.ceilings[-1]:.1f} img/s, "
                      f"server {item.servers[-1]:.1f} img/s", flush=True)
        return [item.result() for item in running]
    finally:
        for item in running:
            item.ceiling.close()
            await item.load.client.close()
            stop(item.server)


def acceptance(results: list[dict], torch_default: str) -> list[tuple[str, str]]:
    """The issue's targets, each the median over rounds of the two servers' ratio in that round (the
    windows of one round are minutes apart at most, so a slow spell hits both sides of a ratio)."""
    by_label = {r["label"]: r for r in results}
    rows = []

    def ratio(title: str, label: str, against: str) -> None:
        if label in by_label and against in by_label:
            found = by_label[label]
            paired = [a / b for a, b in zip(found["server_windows"], by_label[against]["server_windows"], strict=True)]
            rows.append((f"{title}: {label} ({found['served_engine']} {found['precision']}) / {against} server",
                         f"{statistics.median(paired):.2f}x (rounds: {', '.join(f'{r:.2f}' for r in paired)})"))

    ratio(">= 1.3x", DEFAULT_FLAGS, torch_default)
    ratio(">= 1.3x where bf16 is not native", DEFAULT_FP32, "torch fp32")
    ratio(">= 2.5x", AUTO_INT8, "torch fp32")
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
    parser.add_argument("--model-cache", default="", help="model cache for the torchvision name served as ONNX "
                        "(default: a fresh temporary directory, so its export is timed as a user's first start)")
    args = parser.parse_args()

    from rtvi.serving.hardware import available_cpus, cpu_info

    with tempfile.TemporaryDirectory(prefix="rtvi-bench-cache-") as scratch:
        args.model_cache = args.model_cache or scratch
        cpus = available_cpus()
        configs = configurations(args)
        if not (args.onnx_dir and args.int8_dir):
            print("note: without --onnx-dir and --int8-dir only the torch and default configurations run", flush=True)
        results = asyncio.run(measure_all(args, configs, cpus))
    rows = [(f"{r['label']} ({Path(r['model']).name}: {r['served_engine']} {r['precision']})",
             f"ceiling {r['ceiling_img_s']:7.1f}  server {r['server_img_s']:7.1f} img/s  {r['ratio']:6.1%}  "
             f"p50/p95 {r['request_p50_ms']:.0f}/{r['request_p95_ms']:.0f} ms"
             + (f"  trial {r['engine_trial']}" if r["engine_trial"] else "")) for r in results]
    ratios = acceptance(results, torch_default_label(cpu_info().native_bf16, _torch_cuda()))
    print_table(
        f"rtvi serve, max batch {args.max_batch_size}, instances/threads {args.instances or 'auto'}/"
        f"{args.threads or 'auto'}, {args.clients} clients x {args.frames_per_request} frames of 640x480 JPEG, "
        f"ceiling with {cpus} threads",
        rows + ratios,
    )
    write_result("server", {"benchmark": "server", "args": {k: str(v) for k, v in vars(args).items()},
                            "results": results, "acceptance": dict(ratios)}, args.out)


if __name__ == "__main__":
    main()
