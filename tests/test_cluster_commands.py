"""`rtvi loadtest` and `rtvi status`: the Job manifest, the metrics aggregation on real
consumer output, and clear failures without a cluster. Their API calls run against a real
API server in tests/test_kube_cluster_commands.py."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import free_port, produce_frames, read_predictions, rtvi_command, start_consumer
from test_chart import by_kind, chart, helm, render  # noqa: F401  (fixtures)
from test_streaming_pipeline import inference  # noqa: F401  (fixture)


def dry_run(*args: str) -> dict:
    out = subprocess.run(rtvi_command("loadtest", "--dry-run", *args), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_dry_run_manifest_passes_kubernetes_schemas(tmp_path):
    manifest = tmp_path / "job.yaml"
    manifest.write_text(subprocess.run(rtvi_command("loadtest", "--dry-run"), capture_output=True, text=True,
                                       check=True).stdout)
    assert "&id" not in manifest.read_text(), "no YAML anchors for kubectl users"
    validator = Path(sys.executable).with_name("kubernetes-validate")
    for version in ("1.29.0", "1.33.0"):
        out = subprocess.run([str(validator), "--strict", "-k", version, str(manifest)], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_dry_run_job_agrees_with_the_charts_producer_job(helm, chart):  # noqa: F811
    docs = render(helm, chart, "--set", "producer.enabled=true", "--set", "producer.streams=3",
                  "--set", "producer.fps=12", "--set", "producer.duration=90")
    chart_job = by_kind(docs, "Job")[0]
    chart_pod = chart_job["spec"]["template"]["spec"]
    chart_container = chart_pod["containers"][0]
    consumer_env = {e["name"]: e.get("value") for e in
                    [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-consumer")][0]
                    ["spec"]["template"]["spec"]["containers"][0]["env"]}
    job = dry_run("--release", "rtvi", "--namespace", "video", "--streams", "3", "--fps", "12", "--duration", "90",
                  "--image", chart_container["image"])
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    for key in ("image", "args", "securityContext", "resources"):
        assert container[key] == chart_container[key], key
    assert pod["securityContext"] == chart_pod["securityContext"]
    assert pod["restartPolicy"] == chart_pod["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] == chart_job["spec"]["backoffLimit"]
    env = {e["name"]: e["value"] for e in container["env"]}
    chart_env = {e["name"]: e["value"] for e in chart_container["env"]}
    assert env.pop("RTVI_STREAM_PREFIX") == "rtvi-loadtest"  # by design: each run's streams are told apart
    chart_env.pop("RTVI_STREAM_PREFIX")
    assert env == chart_env
    assert env["RTVI_BOOTSTRAP_SERVERS"] == consumer_env["RTVI_BOOTSTRAP_SERVERS"]
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "producer"


@pytest.mark.parametrize("command", ["status", "loadtest"])
def test_without_a_cluster_commands_fail_fast_with_one_line(tmp_path, command):
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "missing"), "HOME": str(tmp_path)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    started = time.monotonic()
    out = subprocess.run(rtvi_command(command), capture_output=True, text=True, env=env, timeout=60)
    assert time.monotonic() - started < 10
    assert out.returncode == 2  # configuration (rtvi.errors.ExitCode.BAD_INPUT)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rtvi {command}: no Kubernetes cluster configured"), out.stderr
    # An unreachable API server: just as quick, just as clear.
    (tmp_path / "config").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "dead",
        "clusters": [{"name": "dead", "cluster": {"server": f"https://127.0.0.1:{free_port()}"}}],
        "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
    }))
    env["KUBECONFIG"] = str(tmp_path / "config")
    started = time.monotonic()
    out = subprocess.run(rtvi_command(command), capture_output=True, text=True, env=env, timeout=60)
    assert time.monotonic() - started < 10 and out.returncode == 4  # ExitCode.UNREACHABLE
    assert out.stderr.count("\n") == 1 and "cannot reach the Kubernetes API at https://127.0.0.1:" in out.stderr


def test_aggregation_reports_what_the_consumer_measured(tmp_path, broker, topics, inference):  # noqa: F811
    from rtvi.cluster.aggregate import aggregate
    from rtvi.streaming.probe import from_prometheus, histogram_quantile

    produce_frames(tmp_path, broker, topics["frames"], 30, 2)
    consumer = start_consumer(tmp_path, broker, topics, inference.address)
    try:
        consumer.wait_figures(lambda m: m.processed >= 60)
        metrics_text = urllib.request.urlopen(f"{consumer.url}/metrics", timeout=5).read().decode()
    finally:
        assert consumer.terminate() == 0

    from_metrics = from_prometheus("consumer-0", metrics_text)
    assert (from_metrics.processed, from_metrics.failed, from_metrics.dropped) == (60, 0, 0)
    assert sum(1 for _ in from_metrics.buckets) > 5 and from_metrics.buckets[float("inf")] == 60
    one_pod = aggregate([from_metrics], seconds=10)
    assert one_pod.frames == 60 and one_pod.throughput_fps == 6.0 and one_pod.pods == ["consumer-0"]

    # Two pods that saw the same distribution: counts add up, and the merged histogram's
    # quantiles are those of one pod.
    twins = aggregate([from_prometheus("a", metrics_text), from_prometheus("b", metrics_text)])
    assert twins.frames == 120 and twins.pods == ["a", "b"]
    assert twins.p50_ms == pytest.approx(histogram_quantile(0.5, from_metrics.buckets) * 1000) == one_pod.p50_ms
    # The estimate brackets the exact median the prediction records tell. A record's latency is
    # taken when it is made, before the broker's ack that the histogram times: so the exact
    # median lies at or above the records' one, and at most one loopback ack (< 50 ms) later.
    predictions = read_predictions(broker, topics["predictions"], 60)
    exact = statistics.median(p["latency_ms"]["capture_to_prediction"] for p in predictions) / 1000
    bounds = sorted(from_metrics.buckets)
    lower = max([b for b in bounds if b < exact], default=0.0)
    upper = next(b for b in bounds if b >= exact + 0.05)
    assert lower * 1000 <= twins.p50_ms <= upper * 1000, (exact, twins.p50_ms)
