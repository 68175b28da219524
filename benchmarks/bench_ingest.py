"""`rtvi ingest`: cameras per CPU core, by resolution, codec and publishing rate.

Each configuration runs `rtvi ingest` as a process, as a pod runs it, reading N cameras that
each send 25 fps over RTSP (the tests' RTSP server, tests/support/rtsp_server.py, in a
process of its own, looping a clip), publishing every camera at 5 or 15 fps to an embedded
Tansu broker. After a warm-up it measures, over a window:

- CPU: the ingest process's own CPU time (utime + stime from /proc), so the camera
  server's and the broker's do not count; CPU per camera = that / N, cameras per core its
  inverse;
- decode: ``rtvi_ingest_decode_seconds`` (the reader threads' CPU per frame read: demux and
  decode for every frame, plus the colour conversion for the published ones);
- published fps per camera (acknowledged by the broker) and read fps (what the cameras sent).

Codecs: H.264 (what cameras send; Main profile, GOP 50, no B-frames) when Debian's ``ffmpeg``
is installed to encode the clips (the pip OpenCV can decode H.264 but not encode it), and
MPEG-4 part 2 (made with ffmpeg too when present, else with OpenCV's own encoder). Clips are
the synthetic pattern with sensor-like noise at typical camera bitrates (1 Mbit/s at
640x480, 2.5 Mbit/s at 1280x720).

    python benchmarks/bench_ingest.py                # ~4 min: 4 cameras, both sizes, rates, codecs
    python benchmarks/bench_ingest.py --cameras 8 --window 20
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import print_table, start_rtvi, write_result  # noqa: E402

from rtvi.local.broker import TansuBroker  # noqa: E402
from rtvi.net import free_port  # noqa: E402
from rtvi.streaming.kafka_config import KafkaConfig, ensure_topics  # noqa: E402
from rtvi.streaming.producer.sources.synthetic import SyntheticSource  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RTSP_SERVER = REPO / "tests" / "support" / "rtsp_server.py"
SOURCE_FPS = 25
BITRATES = {(640, 480): "1M", (1280, 720): "2500k"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def frames(width: int, height: int, count: int) -> np.ndarray:
    """A moving scene with sensor-like noise (a noiseless pattern would compress to nothing)."""
    rng = np.random.default_rng(0)
    source = SyntheticSource(width, height)
    noise = rng.normal(0, 3, (8, height, width, 3))
    for index in range(count):
        yield np.clip(source.frame(index) + noise[index % 8], 0, 255).astype(np.uint8)


def make_clip(path: Path, codec: str, width: int, height: int, seconds: float) -> Path:
    count = int(SOURCE_FPS * seconds)
    if shutil.which("ffmpeg"):
        encoder = ["-c:v", "libx264", "-profile:v", "main", "-preset", "veryfast", "-bf", "0"] if codec == "h264" \
            else ["-c:v", "mpeg4", "-bf", "0"]
        rate = BITRATES[(width, height)]
        ffmpeg = subprocess.Popen(
            ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}",
             "-r", str(SOURCE_FPS), "-i", "-", *encoder, "-g", "50", "-b:v", rate, "-maxrate", rate, "-bufsize", rate,
             "-pix_fmt", "yuv420p", "-f", "mpegts", str(path)], stdin=subprocess.PIPE)
        for image in frames(width, height, count):
            ffmpeg.stdin.write(image.tobytes())
        ffmpeg.stdin.close()
        if ffmpeg.wait(300) != 0:
            raise SystemExit(f"ffmpeg could not encode the {codec} clip")
        return path
    if codec == "h264":
        raise SystemExit("H.264 clips need Debian's ffmpeg (apt-get install ffmpeg); or pass --codecs mpeg4")
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), SOURCE_FPS, (width, height))
    for image in frames(width, height, count):
        writer.write(image)
    writer.release()
    return path


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def scrape(port: int) -> dict[str, float]:
    """Fleet totals of the counters this benchmark reads."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + (f":{sample.labels['outcome']}" if "outcome" in sample.labels else "")
            totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def streaming(port: int, cameras: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            body = json.loads(response.read())
    except (OSError, ValueError):
        return False
    return body.get("states", {}).get("streaming", 0) == cameras


def measure(work: Path, rtsp_port: int, cameras: int, fps: int, warmup: float, window: float) -> dict:
    with TansuBroker(log_path=work / "tansu.log") as broker:
        ensure_topics(KafkaConfig(bootstrap_servers=broker.bootstrap_servers), {"frames": 2})
        port = free_port()
        flags = [arg for k in range(cameras) for arg in ("--camera", f"cam{k}=rtsp://127.0.0.1:{rtsp_port}/cam{k}")]
        proc = start_rtvi("ingest", "--bootstrap-servers", broker.bootstrap_servers, "--fps", str(fps),
                          "--metrics-port", str(port), "--report-interval", "0", *flags, log=work / "ingest.log")
        try:
            deadline = time.monotonic() + 60
            while not streaming(port, cameras):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"rtvi ingest did not stream:\n{(work / 'ingest.log').read_text()[-3000:]}")
                time.sleep(0.2)
            time.sleep(warmup)
            before, cpu_before, started = scrape(port), process_cpu_seconds(proc.pid), time.monotonic()
            time.sleep(window)
            after, cpu_after, elapsed = scrape(port), process_cpu_seconds(proc.pid), time.monotonic() - started
            rss = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
    delta = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after}
    cores = (cpu_after - cpu_before) / elapsed
    decoded = delta["rtvi_ingest_decode_seconds_count"]
    return {
        "cameras": cameras, "publish_fps": fps, "window_s": round(elapsed, 1),
        "cpu_cores": round(cores, 3), "cpu_per_camera": round(cores / cameras, 4),
        "cameras_per_core": round(cameras / cores, 1) if cores else None,
        "decode_ms_per_frame": round(1000 * delta["rtvi_ingest_decode_seconds_sum"] / decoded, 2) if decoded else None,
        "read_fps_per_camera": round(delta["rtvi_ingest_frames_read_total"] / elapsed / cameras, 2),
        "published_fps_per_camera": round(delta["rtvi_ingest_frames_total:published"] / elapsed / cameras, 2),
        "skipped_per_s": round(delta.get("rtvi_ingest_frames_total:skipped", 0.0) / elapsed, 2),
        "failed": int(delta.get("rtvi_ingest_frames_total:failed", 0.0)),
        "reconnects": int(delta.get("rtvi_ingest_reconnects_total", 0.0)),
        "rss_mb": round(rss, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=4, help="cameras read at once")
    parser.add_argument("--sizes", default="640x480,1280x720")
    parser.add_argument("--rates", default="5,15", help="publishing rates (fps per camera)")
    parser.add_argument("--codecs", default="h264,mpeg4" if shutil.which("ffmpeg") else "mpeg4")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/ingest.json)")
    args = parser.parse_args()
    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        for codec in args.codecs.split(","):
            for size in args.sizes.split(","):
                width, height = (int(v) for v in size.split("x"))
                clip = make_clip(work / f"{codec}-{size}.ts", codec, width, height, seconds=8)
                bitrate = clip.stat().st_size * 8 / 8 / 1e6
                rtsp_port = free_port()
                server = subprocess.Popen(
                    [sys.executable, str(RTSP_SERVER), "--host", "127.0.0.1", "--port", str(rtsp_port), "--clip",
                     str(clip), "--fps", str(SOURCE_FPS), *[a for k in range(args.cameras) for a in ("--path", f"cam{k}")]],
                    stdout=subprocess.DEVNULL)
                try:
                    time.sleep(1.0)
                    for fps in (int(r) for r in args.rates.split(",")):
                        result = {"codec": codec, "size": size, "bitrate_mbps": round(bitrate, 2),
                                  **measure(work, rtsp_port, args.cameras, fps, args.warmup, args.window)}
                        results.append(result)
                        rows.append((f"{codec} {size} @ {fps} fps ({bitrate:.1f} Mbit/s)",
                                     f"{result['cpu_per_camera'] * 100:5.1f}% CPU/camera, "
                                     f"{result['cameras_per_core']} cameras/core, decode "
                                     f"{result['decode_ms_per_frame']} ms/frame, published "
                                     f"{result['published_fps_per_camera']} fps (read {result['read_fps_per_camera']})"))
                        print(rows[-1][0], "->", rows[-1][1], flush=True)
                finally:
                    server.terminate()
                    server.wait(10)
    print_table(f"rtvi ingest, {args.cameras} cameras at {SOURCE_FPS} fps each", rows)
    write_result("ingest", {"source_fps": SOURCE_FPS, "cameras": args.cameras, "runs": results,
                            "encoder": "Debian ffmpeg (libx264, mpeg4)" if shutil.which("ffmpeg") else "OpenCV mp4v"},
                 args.out)


if __name__ == "__main__":
    main()
