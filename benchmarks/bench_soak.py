"""Soak: the whole pipeline at 80% of its measured capacity for a long time.

1. Capacity: a topic pre-filled with frames is consumed as fast as the pipeline goes
   (frames done / time, from the consumer's metrics block).
2. Soak: `rtvi produce` paced at ``--load`` (0.8) of that capacity for ``--duration``
   seconds (600) into a real Apache Kafka broker (Tansu where Java is missing), through
   `rtvi consume` and `rtvi serve`. Every ``--sample-s`` seconds it samples the server's
   and the consumer's RSS (from /proc), and from the predictions read back: frames done,
   error records and the p50/p99 capture-to-prediction latency of that window.
3. Checks, after ``--warmup-s``: RSS growth of each process < 10% (last samples vs the
   first), no error records and every produced frame predicted, p99 stable (the last
   third's median p99 at most 2x the first third's, plus 100 ms: the machines this runs
   on are shared, and a leak or a growing queue shows as a steady climb, not a spike). Exit status 1 if one
   fails. The samples go to JSON (``--output``, default benchmarks/results/soak.json).

    python benchmarks/bench_soak.py                      # 10 minutes
    python benchmarks/bench_soak.py --duration 120 --warmup-s 30 --output /tmp/soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import print_table, write_result  # noqa: E402
from support.proc import rss_mb  # noqa: E402

from rtvi.net import free_port  # noqa: E402

RSS_GROWTH_LIMIT = 0.10
P99_DRIFT_FACTOR, P99_DRIFT_SLACK_MS = 2.0, 100.0


def rtvi(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rtvi", *args], stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def start_broker(work: Path, kind: str):
    if kind == "kafka":
        from support.kafka_broker import KafkaBroker

        return KafkaBroker(work / "kafka").start(), "kafka"
    from rtvi.local.broker import TansuBroker

    return TansuBroker(log_path=work / "tansu.log").start(), "tansu"


class PredictionReader:
    """Reads the predictions topic as it grows: latencies and errors per sample window."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self._reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "soak-reader",
                                 "enable.auto.commit": False, "log_level": 0})
        self._reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(2)])
        self.frames: set[tuple[str, int]] = set()
        self.errors = 0

    def read(self, seconds: float) -> list[float]:
        """Latencies (ms) of the predictions read during the next ``seconds``."""
        latencies, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            for msg in self._reader.consume(num_messages=1000, timeout=0.2):
                if msg.error() is not None:
                    continue
                record = json.loads(msg.value())
                self.frames.add((record["stream"], record["frame"]))
                if "error" in record:
                    self.errors += 1
                elif record["latency_ms"]["capture_to_prediction"] is not None:
                    latencies.append(record["latency_ms"]["capture_to_prediction"])
        return latencies

    def close(self) -> None:
        self._reader.close()


def percentile(values: list[float], q: float) -> float | None:
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 1) if len(values) >= 2 else None


def measure_capacity(work: Path, broker, address: str, args) -> float:
    """Frames per second the consumer + server sustain on a pre-filled topic."""
    from rtvi.streaming.kafka_config import KafkaConfig, ensure_topics

    ensure_topics(KafkaConfig(bootstrap_servers=broker.bootstrap_servers), {"soak-capacity": 2, "soak-capacity-out": 2})
    produce = rtvi("produce", "--bootstrap-servers", broker.bootstrap_servers, "--topic", "soak-capacity",
                   "--streams", str(args.streams), "--max-frames", str(args.capacity_frames // args.streams),
                   "--fps", "0", "--synthetic-size", args.size, "--report-interval", "0", log=work / "capacity-produce.log")
    if produce.wait(300) != 0:
        raise SystemExit((work / "capacity-produce.log").read_text())
    consume = rtvi("consume", *consumer_args(broker, address, "soak-capacity", args),
                   "--max-frames", str(args.capacity_frames // args.streams * args.streams), log=work / "capacity.log")
    if consume.wait(600) != 0:
        raise SystemExit((work / "capacity.log").read_text())
    text = (work / "capacity.log").read_text()
    return float(text.rsplit("overall fps: ", 1)[1].split()[0])


def consumer_args(broker, address: str, topic: str, args) -> list[str]:
    return ["--bootstrap-servers", broker.bootstrap_servers, "--topic", topic, "--predictions-topic", f"{topic}-out",
            "--group", f"soak-{topic}", "--inference-url", address, "--metrics-port", "0",
            "--session-timeout-ms", "6000", "--report-interval", "0",
            "--batch-size", str(args.batch_size), "--max-in-flight", str(args.max_in_flight)]


def soak(work: Path, broker, server: subprocess.Popen, address: str, fps_total: float, args) -> dict:
    from rtvi.streaming.kafka_config import KafkaConfig, ensure_topics

    ensure_topics(KafkaConfig(bootstrap_servers=broker.bootstrap_servers), {"soak": 2, "soak-out": 2})
    consumer = rtvi("consume", *consumer_args(broker, address, "soak", args), log=work / "soak-consume.log")
    producer = rtvi("produce", "--bootstrap-servers", broker.bootstrap_servers, "--topic", "soak",
                    "--streams", str(args.streams), "--fps", f"{fps_total / args.streams:.3f}",
                    "--synthetic-size", args.size, "--duration", str(args.duration), "--report-interval", "0",
                    log=work / "soak-produce.log")
    reader = PredictionReader(broker.bootstrap_servers, "soak-out")
    samples, started = [], time.monotonic()
    try:
        while producer.poll() is None:
            latencies = reader.read(args.sample_s)
            for proc, name in ((consumer, "consumer"), (server, "server")):
                if proc.poll() is not None:
                    raise SystemExit(f"{name} exited during the soak:\n{(work / ('soak-consume.log' if name == 'consumer' else 'serve.log')).read_text()[-3000:]}")
            samples.append({
                "t_s": round(time.monotonic() - started, 1), "server_rss_mb": round(rss_mb(server.pid), 1),
                "consumer_rss_mb": round(rss_mb(consumer.pid), 1), "frames": len(latencies),
                "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99), "errors": reader.errors,
            })
            print(json.dumps(samples[-1]), flush=True)
        summary = (work / "soak-produce.log").read_text().split("rtvi produce: ", 1)[1]
        produced = int(summary.split(" frames from ", 1)[0])
        deadline = time.monotonic() + 120
        while len(reader.frames) < produced and time.monotonic() < deadline:
            reader.read(1)
    finally:
        reader.close()
        producer.send_signal(signal.SIGTERM)
        producer.wait(60)
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(60)
    return {"samples": samples, "produced": produced, "predicted": len(reader.frames), "error_records": reader.errors}


def check(run: dict, args) -> dict[str, tuple[bool, str]]:
    steady = [s for s in run["samples"] if args.warmup_s < s["t_s"] <= args.duration]
    results: dict[str, tuple[bool, str]] = {}
    for proc in ("server", "consumer"):
        rss = [s[f"{proc}_rss_mb"] for s in steady]
        if len(rss) < 2:
            results[f"{proc} RSS growth"] = (False, "too few samples after warm-up")
            continue
        base, last = rss[0], statistics.median(rss[-max(1, len(rss) // 5):])
        growth = (last - base) / base
        results[f"{proc} RSS growth"] = (growth < RSS_GROWTH_LIMIT, f"{base:.0f} -> {last:.0f} MB ({growth:+.1%})")
    results["errors"] = (run["error_records"] == 0, f"{run['error_records']} error records")
    results["every frame predicted"] = (run["predicted"] >= run["produced"],
                                        f"{run['predicted']} of {run['produced']}")
    p99 = [s["p99_ms"] for s in steady if s["p99_ms"] is not None]
    third = max(1, len(p99) // 3)
    if len(p99) >= 3:
        first, last = statistics.median(p99[:third]), statistics.median(p99[-third:])
        results["p99 stable"] = (last <= first * P99_DRIFT_FACTOR + P99_DRIFT_SLACK_MS,
                                 f"first third {first:.0f} ms, last third {last:.0f} ms")
    else:
        results["p99 stable"] = (False, "too few samples after warm-up")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600, help="soak seconds")
    parser.add_argument("--warmup-s", type=float, default=60, help="seconds excluded from the checks")
    parser.add_argument("--sample-s", type=float, default=10)
    parser.add_argument("--load", type=float, default=0.8, help="fraction of the measured capacity")
    parser.add_argument("--broker", choices=("kafka", "tansu"), default="kafka" if shutil.which("java") else "tansu")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--size", default="640x480", help="synthetic frame size")
    parser.add_argument("--capacity-frames", type=int, default=800)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--instances", type=int, default=0, help="server model instances; 0: the server's auto")
    parser.add_argument("--threads", type=int, default=0, help="server threads per instance; 0: the server's auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-in-flight", type=int, default=8)
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default benchmarks/results/soak.json)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rtvi-soak-"))
    broker, broker_kind = start_broker(work, args.broker)
    port = free_port()
    server = rtvi("serve", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0", "--weights", "none",
                  "--precision", args.precision, "--instances", str(args.instances), "--threads", str(args.threads),
                  log=work / "serve.log")
    try:
        address = f"127.0.0.1:{port}"
        wait_serving(address, server, work)
        capacity = measure_capacity(work, broker, address, args)
        fps = capacity * args.load
        print(f"capacity {capacity:.1f} frames/s; soaking at {fps:.1f} frames/s for {args.duration:.0f}s", flush=True)
        run = soak(work, broker, server, address, fps, args)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        broker.stop()
    results = check(run, args)
    print_table("soak checks", [(name, f"{'ok  ' if ok else 'FAIL'} {detail}") for name, (ok, detail) in results.items()])
    result = {"benchmark": "soak", "broker": broker_kind, "capacity_fps": round(capacity, 1), "load": args.load,
              "duration_s": args.duration, "warmup_s": args.warmup_s, "args": {k: str(v) for k, v in vars(args).items()},
              **run, "checks": {name: {"ok": ok, "detail": detail} for name, (ok, detail) in results.items()}}
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.output}")
    else:
        write_result("soak", result)
    if all(ok for ok, _ in results.values()):
        shutil.rmtree(work)
        return 0
    print(f"logs kept in {work}")
    return 1


def wait_serving(address: str, server: subprocess.Popen, work: Path, timeout: float = 180) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"server exited:\n{(work / 'serve.log').read_text()[-3000:]}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise SystemExit("server not SERVING in time")


if __name__ == "__main__":
    sys.exit(main())
