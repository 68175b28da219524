"""The chart's rendered containers, run for real as local processes.

Each container's image entrypoint (`rtvi`) runs with the rendered args and env, as the
kubelet would start it (resolving downward-API variables from the rendered resources, as
the kubelet does). Only what a cluster provides is substituted: loopback instead of
0.0.0.0, the test broker instead of cluster DNS, and random weights (the image bakes
the pretrained ones in). The containers are then probed the way the kubelet's probes do:
grpc.health.v1 Check on the inference container's rendered port and services, HTTP GET on
the consumer's rendered paths and port.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import yaml

from conftest import Proc, free_port, health_status, read_predictions
from rtvi.streaming.probe import wait_until
from test_chart import by_kind, chart, helm, one  # noqa: F401  (fixtures)

SERVING = 1


def container(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]["containers"][0]


def cpu_cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def downward_value(rendered: dict, ref: dict) -> str:
    """A resourceFieldRef as the kubelet resolves it: the container's CPU request, rounded up."""
    assert ref["resource"] == "requests.cpu" and ref.get("divisor", "1") == "1", ref
    assert ref["containerName"] == rendered["name"]
    return str(math.ceil(cpu_cores(str(rendered["resources"]["requests"]["cpu"]))))


def process_env(rendered: dict, **overrides: str) -> dict[str, str]:
    env = {}
    for e in rendered.get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif "resourceFieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = downward_value(rendered, e["valueFrom"]["resourceFieldRef"])
    return {**{k: v for k, v in os.environ.items() if not k.startswith("RTVI_")}, **env, **overrides}


def http_probe(container: dict, probe: str) -> int | None:
    """The kubelet's httpGet probe: the status code, or None when nothing answers."""
    get = container[probe]["httpGet"]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == get["port"])
    url = f"http://127.0.0.1:{port}{get['path']}"
    try:
        with urllib.request.urlopen(url, timeout=container[probe]["timeoutSeconds"]) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def start(rendered: dict, log, **overrides: str) -> Proc:
    assert rendered["args"][0] in {"serve", "consume", "produce"}
    return Proc([sys.executable, "-m", "rtvi", *rendered["args"]], log, env=process_env(rendered, **overrides))


def test_rendered_containers_run_and_the_probe_passes(helm, chart, broker, tmp_path):  # noqa: F811
    from rtvi.streaming.kafka_config import KafkaConfig, ensure_topics

    grpc_port, metrics_port, consumer_metrics = free_port(), free_port(), free_port()
    topics = {"frames": "chart-frames", "predictions": "chart-predictions"}
    values = [
        "--set", f"inference.port={grpc_port}", "--set", f"inference.metricsPort={metrics_port}",
        "--set", f"consumer.metricsPort={consumer_metrics}", "--set", "redpanda.enabled=false",
        "--set", f"kafka.bootstrapServers={broker.bootstrap_servers}",
        "--set", f"topics.frames.name={topics['frames']}", "--set", f"topics.predictions.name={topics['predictions']}",
        "--set", "topics.frames.partitions=2", "--set", "topics.predictions.partitions=2",
        "--set", "producer.enabled=true", "--set", "producer.streams=2", "--set", "producer.fps=5",
        "--set", "producer.duration=3", "--set", "producer.syntheticSize=320x240", "--set", "inference.precision=fp32",
    ]
    out = subprocess.run([helm, "template", "rtvi", str(chart), *values], capture_output=True, text=True, check=True)
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    ensure_topics(KafkaConfig(bootstrap_servers=broker.bootstrap_servers), {topics["frames"]: 2, topics["predictions"]: 2})

    inference = container(one(docs, "Deployment", "-inference"))
    server = start(inference, tmp_path / "inference.log", RTVI_HOST="127.0.0.1", RTVI_WEIGHTS="none")
    consumer = producer = None
    try:
        assert process_env(inference)["RTVI_THREADS"] == "2", "the default request: 2 CPUs"
        probe = inference["startupProbe"]["grpc"]
        address = f"127.0.0.1:{probe['port']}"
        budget = inference["startupProbe"]["periodSeconds"] * inference["startupProbe"]["failureThreshold"]
        deadline = time.monotonic() + min(budget, 180)
        while health_status(address, probe["service"]) != SERVING:
            assert server.popen.poll() is None, server.output
            assert time.monotonic() < deadline, f"startupProbe would fail:\n{server.output}"
            time.sleep(inference["startupProbe"]["periodSeconds"] / 10)
        for kind in ("readinessProbe", "livenessProbe"):
            assert health_status(f"127.0.0.1:{inference[kind]['grpc']['port']}", inference[kind]["grpc"]["service"]) == SERVING

        consumer_container = container(one(docs, "Deployment", "-consumer"))
        consumer = start(consumer_container, tmp_path / "consumer.log",
                         RTVI_INFERENCE_URL=address, RTVI_METRICS_HOST="127.0.0.1", RTVI_SESSION_TIMEOUT_MS="6000")
        job = by_kind(docs, "Job")[0]["spec"]["template"]["spec"]["containers"][0]
        producer = start(job, tmp_path / "producer.log")
        assert producer.popen.wait(120) == 0, producer.output
        predictions = read_predictions(broker, topics["predictions"], 30, timeout=120)
        assert len(predictions) == 30, consumer.output
        assert all("top" in p for p in predictions)
        for kind in ("livenessProbe", "readinessProbe"):  # assigned, inference reachable, polling
            assert http_probe(consumer_container, kind) == 200, (kind, consumer.output)
        _, figures = wait_until(f"http://127.0.0.1:{consumer_metrics}/metrics", lambda m: m.processed == 30, 30)
        assert figures.failed == 0
        assert consumer.terminate() == 0
    finally:
        for proc in (producer, consumer, server):
            if proc:
                proc.terminate()
