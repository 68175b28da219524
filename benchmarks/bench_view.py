"""What `rtvi view` costs: its process's CPU under 8 streams at 15 fps, with and without browsers.

1. A broker (a real Apache Kafka broker by default, Tansu with --broker tansu), the topics,
   `rtvi view`, and `rtvi produce --streams 8 --fps 15` (640x480 synthetic JPEG).
2. A stand-in for the consumer publishes one prediction record per frame, in rtvi's own
   format (``prediction_record``, with its partition and offset), so the view reads 120
   frames and 120 predictions a second whatever this machine's inference speed; the view
   cannot tell it from `rtvi consume`.
3. For each number of browsers (headless Chromium on the grid page), the view's CPU
   seconds (utime + stime of its process, from /proc) over --seconds of wall time, the
   records it read and the tile updates it pushed (its /metrics).
4. A table, and JSON in benchmarks/results/view.json with the CPU model and flags.

    python benchmarks/bench_view.py                        # about 2 minutes
    python benchmarks/bench_view.py --seconds 5 --clients 0,1 --out /tmp/view.json   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import RESULTS, print_table, start_rtvi, write_result  # noqa: E402
from bench_latency import stop  # noqa: E402
from bench_soak import start_broker  # noqa: E402

from rtvi.net import free_port  # noqa: E402

TARGET_CORE_SHARE = 0.10
TOP5 = [{"label": name, "index": i, "score": round(0.5 / (i + 1), 4)}
        for i, name in enumerate(("tabby", "tiger cat", "Egyptian cat", "lynx", "espresso"))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(url: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and labels.items() <= s.labels.items())


class StandInConsumer(threading.Thread):
    """One prediction record per frame of the frames topic, as `rtvi consume` writes them."""

    def __init__(self, bootstrap: str, frames: str, predictions: str) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import Consumer, Producer

        self.frames, self.predictions = frames, predictions
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-view-stand-in",
                                   "enable.auto.commit": False, "auto.offset.reset": "latest", "log_level": 0,
                                   "session.timeout.ms": 6000})
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "log_level": 0})
        self._done = threading.Event()
        self.published = 0

    def run(self) -> None:
        from rtvi.streaming.frames import FrameInfo, prediction_record

        self._consumer.subscribe([self.frames])
        while not self._done.is_set():
            for msg in self._consumer.consume(num_messages=500, timeout=0.05):
                if msg.error() is not None:
                    continue
                info = FrameInfo.from_record(msg.headers(), msg.key())
                record = prediction_record(info, model="bench", top=TOP5, inference_ms=5.0,
                                           source=(msg.partition(), msg.offset()))
                self._producer.produce(self.predictions, value=record, key=msg.key())
                self.published += 1
            self._producer.poll(0)
        self._producer.flush(10)
        self._consumer.close()

    def stop(self) -> None:
        self._done.set()
        self.join(15)


def measure(pid: int, metrics_url: str, seconds: float) -> dict:
    """The view's CPU share of one core, and what it read and pushed, over ``seconds``."""
    names = (("frames", "rtvi_view_records_total", {"topic": "frames"}),
             ("predictions", "rtvi_view_records_total", {"topic": "predictions"}),
             ("updates", "rtvi_view_updates_sent_total", {}),
             ("images", "rtvi_view_updates_sent_total", {"image": "yes"}))
    before = {key: metric(metrics_url, name, **labels) for key, name, labels in names}
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    cpu1, wall1 = cpu_seconds(pid), time.monotonic()
    after = {key: metric(metrics_url, name, **labels) for key, name, labels in names}
    wall = wall1 - wall0
    return {"seconds": round(wall, 1), "cpu_seconds": round(cpu1 - cpu0, 3),
            "core_share": round((cpu1 - cpu0) / wall, 4),
            **{f"{key}_per_s": round((after[key] - before[key]) / wall, 1) for key in before}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--update-fps", type=float, default=5.0, help="the view's --update-fps")
    parser.add_argument("--clients", default="0,1", help="numbers of browsers to measure with, comma-separated")
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement window per row")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds before each window")
    parser.add_argument("--broker", choices=("kafka", "tansu"), default="kafka")
    parser.add_argument("--out", type=Path, default=RESULTS / "view.json")
    args = parser.parse_args()
    clients = [int(n) for n in args.clients.split(",")]

    work = Path(tempfile.mkdtemp(prefix="rtvi-bench-view-"))
    with ExitStack() as stack:
        broker, broker_kind = start_broker(work, args.broker)
        stack.callback(broker.stop)
        from rtvi.streaming.kafka_config import KafkaConfig, ensure_topics

        ensure_topics(KafkaConfig(bootstrap_servers=broker.bootstrap_servers), {"frames": 4, "predictions": 4})
        port = free_port()
        view = start_rtvi("view", "--bootstrap-servers", broker.bootstrap_servers, "--port", str(port),
                          "--update-fps", str(args.update_fps), log=work / "view.log")
        stack.callback(stop, view)
        url = f"http://127.0.0.1:{port}"
        wait_ready(f"{url}/readyz", view, work / "view.log")
        stand_in = StandInConsumer(broker.bootstrap_servers, "frames", "predictions")
        stand_in.start()
        stack.callback(stand_in.stop)
        time.sleep(6)  # the stand-in's group join
        producer = start_rtvi("produce", "--bootstrap-servers", broker.bootstrap_servers, "--streams",
                              str(args.streams), "--fps", str(args.fps), "--synthetic-size", args.size,
                              "--report-interval", "0", log=work / "produce.log")
        stack.callback(stop, producer)
        rows = []
        for n in clients:
            with ExitStack() as browsers:
                from support.browser import chromium

                for _ in range(n):
                    driver = browsers.enter_context(chromium())
                    driver.get(url)
                time.sleep(args.warmup)
                row = {"clients": n, **measure(view.pid, f"{url}/metrics", args.seconds)}
                with urllib.request.urlopen(f"{url}/api/streams", timeout=5) as response:
                    streams = json.loads(response.read())
                row["streams_shown"] = len(streams)
                row["processed_fps_sum"] = round(sum(s["fps"] for s in streams), 1)
                rows.append(row)
                print(json.dumps(row), flush=True)

    print_table(f"rtvi view CPU, {args.streams} streams x {args.fps:g} fps of {args.size} JPEG ({broker_kind})", [
        (f"{r['clients']} browser(s)",
         f"{r['core_share'] * 100:.1f}% of one core; read {r['frames_per_s']:.0f} frames/s + "
         f"{r['predictions_per_s']:.0f} predictions/s; pushed {r['updates_per_s']:.0f} updates/s "
         f"({r['images_per_s']:.0f} with an image)") for r in rows])
    worst = max(r["core_share"] for r in rows)
    verdict = "PASS" if worst < TARGET_CORE_SHARE else "FAIL"
    print(f"{verdict}: the view's highest CPU share {worst * 100:.1f}% "
          f"(target under {TARGET_CORE_SHARE * 100:.0f}% of one core)")
    write_result("view", {"benchmark": "view", "args": {k: str(v) if isinstance(v, Path) else v
                                                        for k, v in vars(args).items()},
                          "broker": broker_kind, "rows": rows, "target_core_share": TARGET_CORE_SHARE,
                          "verdict": verdict, "logs": str(work)}, args.out)


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(log.read_text())
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"not ready: {url}\n{log.read_text()}")


if __name__ == "__main__":
    main()
