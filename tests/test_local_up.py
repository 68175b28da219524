"""`rtvi up`: the README's main job, end to end, leaving nothing running; bad input
fails fast, before anything starts."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Proc, free_port, rtvi_command


def _processes_mentioning(fragments: list[str]) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(f in text for f in fragments):
            found.append(text)
    return found


def _run_up(tmp_path, *args: str) -> str:
    """Run `rtvi up` to its end in a work dir of the test's own; its output, once it exited 0."""
    proc = Proc(rtvi_command("up", *args, "--work-dir", str(tmp_path / "work")), tmp_path / "up.log")
    try:
        assert proc.popen.wait(240) == 0, proc.output
    finally:
        proc.kill()
    return proc.output


def _frames_predicted(out: str) -> int:
    """The verdict line's count; the line must say nothing failed."""
    verdict = re.search(r"rtvi up: (\d+) frames predicted, \d+ dropped, 0 failed", out)
    assert verdict, out
    return int(verdict.group(1))


def test_up_runs_the_pipeline_in_real_time_and_stops_everything(tmp_path):
    """The default flags (real time, 2 streams x 10 fps) within the README's bound: p95 <= 1 s."""
    out = _run_up(tmp_path, "--duration", "10", "--report-interval", "3", "--max-p95-ms", "1000",
                  "--view-port", str(free_port()))
    assert "RANDOM weights" in out  # no pretrained weights on this machine: said loudly
    # Live status lines while it runs, from the consumer's metrics; the block for people; the verdict.
    status = re.findall(r"in (\d+) \([0-9.]+ fps\)  out (\d+) \([0-9.]+ fps\)  capture->prediction p50", out)
    assert status and int(status[-1][1]) > 0, out
    assert "DROPPED (real time: frames older than 300 ms are skipped)" in out
    assert _frames_predicted(out) > 0
    assert re.search(r"0 failed; latency bound met: p95 \d+ ms <= 1000 ms", out), out
    ports = re.findall(r"127\.0\.0\.1:(\d+)", out)
    assert ports, out
    assert _processes_mentioning([f"127.0.0.1:{p}" for p in ports]) == []


# Checking a model name means importing torch (seconds on a loaded machine): those cases get more time.
MODEL_CHECK_S = 20


@pytest.mark.parametrize(
    ("args", "problem", "code"),
    [  # exit 2: bad input; 4: a dependency did not answer (rtvi.errors.ExitCode)
        (["up", "--no-view", "--video", "/nonexistent.mp4"], "rtvi up: video file '/nonexistent.mp4' does not exist", 2),
        (["up", "--no-view", "--camera", "7"], "rtvi up: no camera 7", 2),
        (["up", "--no-view", "--bootstrap-servers", "127.0.0.1:{port}"], "rtvi up: no Kafka broker answered at 127.0.0.1:", 4),
        (["up", "--view-port", "{busy}"], "rtvi up: port {busy} on 127.0.0.1 is in use: pass --view-port PORT or --no-view", 2),
        (["up", "--model", "resnet1800"], "rtvi up: unknown torchvision classification model 'resnet1800'", 2),
        (["up", "--model", "/nonexistent/model"], "rtvi up: /nonexistent/model: no such model directory", 2),
        (["produce", "--bootstrap-servers", "127.0.0.1:{port}"], "no Kafka broker answered at 127.0.0.1:", 4),
        (["produce", "--source", "video", "--video", "/nonexistent.mp4"], "video file '/nonexistent.mp4' does not exist", 2),
    ],
    ids=["up-missing-video", "up-absent-camera", "up-unreachable-broker", "up-view-port-in-use", "up-unknown-model",
         "up-missing-model-directory", "produce-unreachable-broker",
         "produce-missing-video"],
)
def test_bad_input_fails_fast_in_one_line(args, problem, code):
    closed_port = str(free_port())  # nothing listens there
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = str(busy.getsockname()[1])
        started = time.monotonic()
        out = subprocess.run(rtvi_command(*(a.replace("{port}", closed_port).replace("{busy}", taken) for a in args)),
                             capture_output=True, text=True, timeout=60)
    problem = problem.replace("{busy}", taken)
    took = time.monotonic() - started
    assert out.returncode == code, out
    assert took < (MODEL_CHECK_S if "--model" in args else 5), f"took {took:.1f}s"
    assert out.stdout == "" and out.stderr.count("\n") == 1 and problem in out.stderr, out.stderr


def test_up_runs_its_consumer_to_server_hop_over_mutual_tls(tmp_path):
    """The same certificate flags as `rtvi serve` and `rtvi consume`: the pipeline runs with its
    consumer presenting a client certificate (what each service is given: tests/unit/test_settings.py)."""
    from support.certs import TestCA, require_openssl

    require_openssl()
    ca = TestCA(tmp_path / "ca")
    server = ca.issue("server", ips=("127.0.0.1",))
    client = ca.issue("consumer", client=True)
    out = _run_up(tmp_path, "--duration", "6", "--no-view", "--tls-cert", str(server.cert), "--tls-key",
                  str(server.key), "--tls-client-ca", str(ca.pem), "--inference-tls-ca", str(ca.pem),
                  "--inference-tls-cert", str(client.cert), "--inference-tls-key", str(client.key))
    assert _frames_predicted(out) > 0


def test_up_serves_a_model_directory_as_rtvi_serve_would(tmp_path, lite0_onnx):
    """`--model` takes what `rtvi serve --model` takes: here a model directory (EfficientNet-Lite0,
    ONNX), served on the engine the server measures fastest, predicted under its folder name."""
    out = _run_up(tmp_path, "--model", str(lite0_onnx), "--duration", "6", "--no-view")
    assert _frames_predicted(out) > 0
    assert "RANDOM weights" not in out, "a model directory carries its weights"
