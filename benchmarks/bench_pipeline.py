"""End-to-end pipeline throughput against the model-only ceiling, measured in one run.

1. The ceiling: the model alone on ready tensors (same model, precision, batch size and
   compute threads), in 5 s windows before and after the run; the median counts.
2. Throughput: a topic pre-filled with 640x480 JPEG frames; `rtvi consume` reads them,
   calls `rtvi serve`, publishes predictions and commits offsets; rate = frames done /
   time from the first frame read to the final commit (the consumer's overall FPS).
3. Latency: one stream paced at 15 fps through the same server; p50/p95 capture-to-prediction.

Everything runs on this machine: an embedded Tansu broker and the services as processes.

    python benchmarks/bench_pipeline.py
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _common import ModelCeiling, print_table, start_rtvi, write_result  # noqa: E402

from rtvi.net import free_port  # noqa: E402
from rtvi.local.pipeline import serving  # noqa: E402
from rtvi.streaming.probe import PodMetrics, healthy, wait_until  # noqa: E402


def run_consumer(work: Path, bootstrap: str, address: str, topic: str, frames: int, args, name: str,
                 then=None) -> tuple[PodMetrics, float]:
    """Consume ``frames`` frames of ``topic`` (``then()`` runs once the consumer is ready, /readyz):
    its final metrics and its throughput in frames/s, from its first frame read to its last done."""
    log, port = work / f"{name}.log", free_port()
    proc = start_rtvi("consume", "--bootstrap-servers", bootstrap, "--topic", topic, "--predictions-topic", f"{topic}-out",
                "--group", f"bench-{name}", "--inference-url", address, "--metrics-port", str(port),
                "--metrics-host", "127.0.0.1", "--readiness-interval-s", "1",
                "--session-timeout-ms", "6000", "--report-interval", "0",
                "--batch-size", str(args.batch_size), "--max-in-flight", str(args.max_in_flight), log=log)
    url = f"http://127.0.0.1:{port}"
    alive = lambda: proc.poll() is None  # noqa: E731
    try:
        if then:
            while not healthy(f"{url}/readyz"):
                if not alive():
                    raise SystemExit(f"consumer failed:\n{log.read_text()}")
                time.sleep(0.05)
            then()
        first, _ = wait_until(f"{url}/metrics", lambda m: m.consumed > 0, 900, alive)
        last, final = wait_until(f"{url}/metrics", lambda m: m.done >= frames, 900, alive)
    except TimeoutError:
        raise SystemExit(f"consumer did not finish {frames} frames:\n{log.read_text()[-3000:]}") from None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return final, final.processed / max(last - first, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--precision", default="auto",
                        help="as rtvi serve's --precision: auto is bf16 only where the CPU runs it natively")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8, help="consumer frames per request")
    parser.add_argument("--max-in-flight", type=int, default=8)
    parser.add_argument("--instances", type=int, default=os.cpu_count(), help="server model instances")
    parser.add_argument("--threads", type=int, default=1, help="server torch threads per instance")
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--ceiling-windows", type=int, default=3, help="5 s ceiling windows before and after")
    args = parser.parse_args()

    from rtvi.local.broker import TansuBroker
    from rtvi.streaming.kafka_config import KafkaConfig, ensure_topics

    # The model alone with every compute thread the server has, in windows before and
    # after the pipeline run (the machine's speed drifts; the median of all counts).
    ceiling = ModelCeiling("resnet18", args.precision, args.max_batch_size, args.instances * args.threads)
    windows = [ceiling.window(5.0) for _ in range(args.ceiling_windows)]
    print(f"model-only ceiling: {statistics.median(windows):.1f} img/s")
    work = Path(tempfile.mkdtemp(prefix="rtvi-bench-"))
    port = free_port()
    with TansuBroker(log_path=work / "broker.log") as broker:
        bootstrap = broker.bootstrap_servers
        ensure_topics(KafkaConfig(bootstrap_servers=bootstrap),
                      {"bulk": 2, "bulk-out": 2, "paced": 1, "paced-out": 1})
        server = start_rtvi("serve", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0", "--weights", "none",
                      # torch, as the ceiling: the ratio is the pipeline's own overhead (`rtvi serve`'s
                      # default engine for a name is measured at load: bench_server.py compares engines)
                      "--engine", "torch", "--precision", args.precision, "--max-batch-size", str(args.max_batch_size),
                      "--threads", str(args.threads), "--instances", str(args.instances), log=work / "serve.log")
        try:
            producer = start_rtvi("produce", "--bootstrap-servers", bootstrap, "--topic", "bulk", "--streams", "2",
                            "--max-frames", str(args.frames // 2), "--fps", "0", "--report-interval", "0",
                            log=work / "prefill.log")
            if producer.wait(600) != 0:
                raise SystemExit((work / "prefill.log").read_text())
            while not serving(f"127.0.0.1:{port}"):
                if server.poll() is not None:
                    raise SystemExit((work / "serve.log").read_text())
                time.sleep(0.2)
            bulk = run_consumer(work, bootstrap, f"127.0.0.1:{port}", "bulk", args.frames, args, "bulk")
            paced_frames = int(args.latency_seconds * 15)
            producers = []
            paced = run_consumer(
                work, bootstrap, f"127.0.0.1:{port}", "paced", paced_frames, args, "paced",
                then=lambda: producers.append(start_rtvi(
                    "produce", "--bootstrap-servers", bootstrap, "--topic", "paced", "--streams", "1",
                    "--max-frames", str(paced_frames), "--fps", "15", "--synthetic-size", "640x480",
                    "--report-interval", "0", log=work / "paced-produce.log")),
            )
            producers[0].wait(120)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    windows += [ceiling.window(5.0) for _ in range(args.ceiling_windows)]
    ceiling.close()
    ceiling_rate = statistics.median(windows)
    bulk_figures, throughput = bulk
    processed = bulk_figures.processed
    paced_figures, _ = paced
    p50, p95 = paced_figures.quantile_ms(0.5), paced_figures.quantile_ms(0.95)
    ratio = throughput / ceiling_rate
    print_table(
        f"rtvi pipeline: resnet18 torch {ceiling.precision} channels_last, {args.frames} prefilled 640x480 JPEG frames, "
        f"consumer batch {args.batch_size} x {args.max_in_flight} in flight, server max batch {args.max_batch_size}, "
        f"{args.instances} instances x {args.threads} threads",
        [
            ("model-only ceiling, median (img/s)", f"{ceiling_rate:.1f}  (windows {min(windows):.0f}-{max(windows):.0f})"),
            ("end-to-end throughput (frames/s)", f"{throughput:.1f}  ({processed} frames)"),
            ("end-to-end / ceiling", f"{ratio:.1%}"),
            ("1 stream @15 fps: capture->prediction p50 / p95 (ms)", f"{p50:.0f} / {p95:.0f}"),
        ],
    )
    write_result("pipeline", {
        "benchmark": "pipeline", "args": vars(args), "ceiling_img_s": ceiling_rate, "ceiling_windows": windows,
        "throughput_fps": throughput, "frames": processed, "ratio": ratio,
        "paced_p50_ms": p50, "paced_p95_ms": p95, "logs": str(work),
    })


if __name__ == "__main__":
    main()
