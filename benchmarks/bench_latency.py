"""Capture-to-prediction latency against offered load, keep-all vs real time.

1. Capacity: a keep-all consumer on a prefilled topic; frames/s timed from its metrics
   between 20% and 90% of the frames (start-up and shutdown left out).
2. For each offered load (a multiple of that capacity, spread over --streams paced
   streams) and each mode (keep-all: --max-frame-age-ms 0; real time: the bound given),
   a fresh topic and consumer group, --seconds of frames, then the consumer finishes
   what it read; --repeats times, in the order keep-all, real time, real time, keep-all,
   ... so that a machine whose speed drifts (a shared one does, by 10-20% within minutes)
   slows both modes alike, and their throughputs are compared as means over the repeats.
   Measured: throughput (frames predicted per second while the load is offered: from the first frame finished until the producer stops; keep-all's drain
   afterwards, with the producer's CPU free again, is timed apart), p50/p95/p99 capture-to-prediction (from the consumer's
   histogram, as Prometheus' histogram_quantile reads it), drop rate, and per-stream
   fairness (fewest / most frames predicted of any stream). Real time uses the consumer's
   default adaptive dispatch, within the same --batch-size and --max-in-flight.
3. A table, JSON in benchmarks/results/latency.json (with the CPU model and flags) and
   a plot, benchmarks/results/latency.png.

Everything runs on this machine: an embedded Tansu broker and the services as processes.

    python benchmarks/bench_latency.py                       # about 15 minutes on 2 cores
    python benchmarks/bench_latency.py --seconds 3 --loads 0.5,2 --capacity-frames 60   # smoke run
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _common import RESULTS, machine, print_table, start_rtvi, write_result  # noqa: E402

from rtvi.net import free_port  # noqa: E402
from rtvi.local.pipeline import serving  # noqa: E402
from rtvi.streaming.probe import IDLE_S, PodMetrics, healthy, scrape, wait_idle, wait_until  # noqa: E402



def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, bootstrap: str, address: str) -> None:
        self.args, self.work, self.bootstrap, self.address = args, work, bootstrap, address

    def consumer(self, name: str, max_age_ms: float) -> tuple[subprocess.Popen, str, Path]:
        port, log = free_port(), self.work / f"{name}-consume.log"
        proc = start_rtvi("consume", "--bootstrap-servers", self.bootstrap, "--topic", name,
                    "--predictions-topic", f"{name}-out", "--group", f"bench-{name}", "--inference-url", self.address,
                    "--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--session-timeout-ms", "6000",
                    "--report-interval", "0", "--readiness-interval-s", "1", "--max-frame-age-ms", str(max_age_ms),
                    "--dispatch", self.args.dispatch,
                    "--batch-size", str(self.args.batch_size), "--max-in-flight", str(self.args.max_in_flight), log=log)
        url = f"http://127.0.0.1:{port}/metrics"
        return proc, url, log

    def producer(self, topic: str, fps: float, *, frames: int = 0, seconds: float = 0) -> subprocess.Popen:
        limit = ["--max-frames", str(frames)] if frames else ["--duration", str(seconds)]
        return start_rtvi("produce", "--bootstrap-servers", self.bootstrap, "--topic", topic, "--streams",
                    str(self.args.streams), "--fps", f"{fps:.3f}", "--synthetic-size", self.args.size,
                    "--report-interval", "0", *limit, log=self.work / f"{topic}-produce.log")

    def capacity(self) -> float:
        frames = self.args.capacity_frames // self.args.streams
        if self.producer("capacity", 0, frames=frames).wait(600) != 0:
            raise SystemExit((self.work / "capacity-produce.log").read_text())
        total = frames * self.args.streams
        proc, url, log = self.consumer("capacity", 0)
        try:
            alive = lambda: proc.poll() is None  # noqa: E731
            t0, first = wait_until(url, lambda m: m.processed >= 0.2 * total, 600, alive)
            t1, last = wait_until(url, lambda m: m.processed >= 0.9 * total, 600, alive)
        finally:
            stop(proc)
        return (last.processed - first.processed) / (t1 - t0)

    def point(self, mode: str, max_age_ms: float, load: float, capacity: float, repeat: int) -> dict:
        name = _topic(mode, load, repeat)
        proc, url, log = self.consumer(name, max_age_ms)
        alive = lambda: proc.poll() is None  # noqa: E731
        try:
            ready_url = url.replace("/metrics", "/readyz")
            deadline = time.monotonic() + 120
            while not healthy(ready_url):
                if not alive() or time.monotonic() > deadline:
                    raise SystemExit(f"consumer not ready:\n{log.read_text()}")
                time.sleep(0.1)
            producer = self.producer(name, load * capacity / self.args.streams, seconds=self.args.seconds)
            first_at, first = wait_until(url, lambda m: m.done >= 1, 120, alive)
            if producer.wait(self.args.seconds + 120) != 0:
                raise SystemExit((self.work / f"{name}-produce.log").read_text())
            loaded_at, loaded = time.monotonic(), scrape("consumer", url)
            if loaded is None:
                raise SystemExit(f"consumer did not answer:\n{log.read_text()[-3000:]}")
            # Everything published is read and finished once the consumer reads nothing new and
            # holds nothing (Tansu's watermarks cannot tell how much was published).
            final = wait_idle(url, self.args.drain_timeout, alive)
            if final is None or final.done < final.consumed:
                raise SystemExit(f"consumer did not finish what it read:\n{log.read_text()[-3000:]}")
            done_at = time.monotonic() - IDLE_S
        finally:
            stop(proc)
        # While the load was offered: keep-all's drain afterwards (the producer's core free again) is not counted.
        throughput = (loaded.processed - first.processed) / max(loaded_at - first_at, 1e-9)
        return _row(mode, load, load * capacity, final.consumed, throughput, final, drain_s=done_at - loaded_at) | {
            "repeat": repeat}

    def run(self) -> tuple[float, list[dict]]:
        capacity = self.capacity()
        print(f"capacity: {capacity:.1f} frames/s")
        rows = []
        modes = [("keep-all", 0.0), ("real-time", self.args.max_frame_age_ms)]
        for load in self.args.loads:
            for repeat in range(self.args.repeats):
                for mode, age in (modes if repeat % 2 == 0 else modes[::-1]):
                    rows.append(self.point(mode, age, load, capacity, repeat))
                    print(f"  {mode:9} {load:>4g}x #{repeat + 1}: {rows[-1]['throughput_fps']:.1f} fps, "
                          f"p95 {rows[-1]['p95_ms']:.0f} ms, drop {rows[-1]['drop_rate']:.0%}", flush=True)
        return capacity, rows


def _topic(mode: str, load: float, repeat: int) -> str:
    return f"{mode}-{load:g}x-{repeat}".replace(".", "_")


def _row(mode: str, load: float, offered: float, produced: int, throughput: float, final: PodMetrics,
         drain_s: float) -> dict:
    per_stream = [outcomes.get("processed", 0) for outcomes in final.streams.values()]
    return {
        "mode": mode, "load": load, "offered_fps": offered, "produced": produced,
        "processed": final.processed, "dropped": final.dropped, "failed": final.failed,
        "throughput_fps": throughput, "drain_s": drain_s,
        "p50_ms": final.quantile_ms(0.5), "p95_ms": final.quantile_ms(0.95), "p99_ms": final.quantile_ms(0.99),
        "round_trip_p50_ms": final.round_trip_ms(0.5),
        "drop_rate": final.dropped / produced if produced else 0.0,
        "fairness": min(per_stream) / max(per_stream) if per_stream and max(per_stream) else 0.0,
    }


def _means(rows: list[dict]) -> list[dict]:
    """One row per mode and load: the repeats' mean throughput and latencies."""
    merged = []
    for key in dict.fromkeys((r["mode"], r["load"]) for r in rows):
        mine = [r for r in rows if (r["mode"], r["load"]) == key]
        merged.append({k: (sum(r[k] for r in mine) / len(mine) if isinstance(mine[0][k], float) else mine[0][k])
                       for k in mine[0]})
    return merged


def plot(rows: list[dict], capacity: float, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _means(rows)
    fig, (latency, throughput) = plt.subplots(1, 2, figsize=(12, 4.5))
    for mode, colour in (("keep-all", "tab:red"), ("real-time", "tab:blue")):
        mine = [r for r in rows if r["mode"] == mode]
        loads = [r["load"] for r in mine]
        for key, style in (("p50_ms", ":"), ("p95_ms", "-"), ("p99_ms", "--")):
            latency.plot(loads, [r[key] for r in mine], style, marker="o", color=colour,
                         label=f"{mode} {key[:3]}")
        throughput.plot(loads, [r["throughput_fps"] for r in mine], "-", marker="o", color=colour,
                        label=f"{mode} predicted")
    throughput.plot([r["load"] for r in rows], [r["offered_fps"] for r in rows], ":", color="grey", label="offered")
    throughput.axhline(capacity, color="grey", linewidth=0.8, label=f"capacity {capacity:.0f} fps")
    latency.set(xlabel="offered load (x capacity)", ylabel="capture to prediction (ms)", yscale="log",
                title="latency")
    throughput.set(xlabel="offered load (x capacity)", ylabel="frames/s", title="throughput")
    for axes in (latency, throughput):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def acceptance(rows: list[dict], max_frame_age_ms: float) -> list[dict]:
    """Issue 20's two figures per load: real time's mean throughput against keep-all's on the
    same load, and its p99 against the age bound plus two of its median round trips (a frame may
    wait out the bound, then a round trip already in flight, then its own), in every repeat: the
    worst repeat's margin is the one shown."""
    means = {(r["mode"], r["load"]): r for r in _means(rows)}
    checks = []
    for load in sorted({r["load"] for r in rows}):
        real_time = [r for r in rows if r["load"] == load and r["mode"] == "real-time"]
        keep_all = means.get(("keep-all", load))
        if real_time and keep_all and keep_all["throughput_fps"] > 0:
            worst = max(real_time, key=lambda r: r["p99_ms"] - 2 * r["round_trip_p50_ms"])
            bound = max_frame_age_ms + 2 * worst["round_trip_p50_ms"]
            checks.append({"load": load, "repeats": len(real_time),
                           "throughput_vs_keep_all": means["real-time", load]["throughput_fps"] / keep_all["throughput_fps"],
                           "p99_ms": worst["p99_ms"], "p99_bound_ms": bound, "p99_held": worst["p99_ms"] <= bound})
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", type=lambda s: [float(x) for x in s.split(",")], default=[0.25, 0.5, 1, 1.5, 2],
                        help="offered loads as multiples of the measured capacity")
    parser.add_argument("--seconds", type=float, default=30, help="frames published per point")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--size", default="640x480", help="synthetic frame size")
    parser.add_argument("--max-frame-age-ms", type=float, default=300, help="the real-time mode's bound")
    parser.add_argument("--batch-size", type=int, default=8, help="consumer frames per request, the most (as rtvi up)")
    parser.add_argument("--max-in-flight", type=int, default=8, help="consumer requests outstanding, the most (as rtvi up)")
    parser.add_argument("--capacity-frames", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=2,
                        help="points per mode and load, alternating which mode goes first")
    parser.add_argument("--dispatch", default="adaptive", choices=("adaptive", "fixed"), help="real time's dispatch")
    parser.add_argument("--drain-timeout", type=float, default=300, help="how long keep-all may take to catch up")
    parser.add_argument("--serve-args", default="", help="extra flags for rtvi serve, e.g. '--precision fp32'")
    args = parser.parse_args()

    from rtvi.local.broker import TansuBroker

    work = Path(tempfile.mkdtemp(prefix="rtvi-bench-latency-"))
    port = free_port()
    with TansuBroker(log_path=work / "broker.log") as broker:
        server = start_rtvi("serve", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0", "--weights", "none",
                      *args.serve_args.split(), log=work / "serve.log")
        try:
            from rtvi.streaming.kafka_config import KafkaConfig, ensure_topics

            names = ["capacity"] + [_topic(m, load, repeat) for load in args.loads for repeat in range(args.repeats)
                                    for m in ("keep-all", "real-time")]
            ensure_topics(KafkaConfig(bootstrap_servers=broker.bootstrap_servers),
                          {t: 2 for name in names for t in (name, f"{name}-out")})
            while not serving(f"127.0.0.1:{port}"):
                if server.poll() is not None:
                    raise SystemExit((work / "serve.log").read_text())
                time.sleep(0.2)
            capacity, rows = Bench(args, work, broker.bootstrap_servers, f"127.0.0.1:{port}").run()
        finally:
            stop(server)
    cpu = machine()
    title = (f"rtvi capture-to-prediction vs offered load: resnet18, {args.streams} streams {args.size}, consumer "
             f"batch {args.batch_size} x {args.max_in_flight} in flight, real time {args.max_frame_age_ms:g} ms; "
             f"{cpu['cpu_model'] or 'unknown CPU'}, {cpu['usable_cpus']} usable CPUs")
    print_table(title, [
        (f"{r['mode']:9} {r['load']:>4g}x #{r['repeat'] + 1} ({r['offered_fps']:.0f} fps offered)",
         f"{r['throughput_fps']:6.1f} fps  p50/p95/p99 {r['p50_ms']:6.0f} / {r['p95_ms']:6.0f} / {r['p99_ms']:6.0f} ms  "
         f"dropped {r['drop_rate']:4.0%}  fairness {r['fairness']:.2f}")
        for r in rows
    ])
    checks = acceptance(rows, args.max_frame_age_ms)
    print_table("real time against keep-all (issue 20: >= 90% of keep-all at 2x, p99 within the bound)", [
        (f"{c['load']:>4g}x", f"{c['throughput_vs_keep_all']:6.1%} of keep-all's mean throughput  worst p99 {c['p99_ms']:5.0f} ms "
         f"{'<=' if c['p99_held'] else '> '} {c['p99_bound_ms']:5.0f} ms (age bound + 2 median round trips)")
        for c in checks
    ])
    write_result("latency", {"benchmark": "latency", "args": vars(args), "capacity_fps": capacity,
                             "rows": rows, "acceptance": checks, "logs": str(work)})
    plot(rows, capacity, title, RESULTS / "latency.png")


if __name__ == "__main__":
    main()
