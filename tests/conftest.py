"""Shared fixtures: real processes on loopback, free ports, and clean shutdown.

The rtvi services run as subprocesses (``python -m rtvi``), never in the test
process: tritonclient, the peer client these tests use, registers the same protobuf
package (``inference``) as rtvi's own stubs, and one process cannot hold both.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def health_status(address: str, service: str = "", timeout: float = 1.0) -> int | None:
    """The grpc.health.v1 status, or None while nothing answers."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status
        except grpc.RpcError:
            return None


class Proc:
    """A subprocess that logs to a file and is always stopped."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "wb")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.popen = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=full_env, cwd=REPO)

    @property
    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._log.close()
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self._log.close()


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` in Prometheus text whose labels include ``labels``."""
    from rtvi.streaming.probe import parse, sample_sum

    return sample_sum(parse(text), name, **labels)


def rtvi_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "rtvi", *args]


class InferenceServer:
    """`rtvi serve` on loopback with random weights."""

    def __init__(self, tmp_path: Path, *extra: str, port: int | None = None, env: dict[str, str] | None = None) -> None:
        """Extra flags come after the defaults, so ``--weights PATH`` overrides ``none``."""
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.health_address = self.address  # a TLS server answers plaintext health on its --health-port
        self.proc = Proc(
            rtvi_command(
                "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--metrics-port", str(self.metrics_port), "--weights", "none", *extra,
            ),
            tmp_path / f"serve-{self.port}.log",
            env=env,
        )

    def wait_serving(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.popen.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.proc.output}")
            if health_status(self.health_address) == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.1)
        raise AssertionError(f"server not SERVING after {timeout}s:\n{self.proc.output}")

    def metrics_text(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> Path:
    """One model cache (RTVI_MODEL_CACHE) for every `rtvi serve` the session starts: a torchvision
    name is exported to ONNX once per session, not per server, and the user's cache is not touched."""
    path = tmp_path_factory.mktemp("model-cache")
    os.environ["RTVI_MODEL_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A resnet18 state dict with seeded random weights (nothing is downloaded)."""
    import torch
    import torchvision

    torch.manual_seed(1234)
    path = tmp_path_factory.mktemp("weights") / "resnet18-seeded.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, checkpoint) -> Iterator[InferenceServer]:
    """One fp32 resnet18 server loaded from ``checkpoint``, shared by a module's tests."""
    srv = InferenceServer(
        tmp_path_factory.mktemp("server"), "--max-batch-size", "8", "--max-message-mb", "2", "--weights", str(checkpoint),
        "--instances", "2", "--threads", "1", "--precision", "fp32",
    )
    try:
        srv.wait_serving()
        yield srv
    finally:
        srv.proc.terminate()


@pytest.fixture(scope="session")
def lite0_onnx(tmp_path_factory) -> Path:
    """EfficientNet-Lite0 with its real ImageNet weights as an ONNX fp32 model directory, exported
    once per session by `rtvi export` (about 20 s): tests that need real classification use it."""
    out = tmp_path_factory.mktemp("lite0") / "lite0-onnx"
    done = subprocess.run(rtvi_command("export", "--from-module", "tests.support.photos:efficientnet_lite0",
                                       "--labels", "imagenet", "--format", "onnx", "--output", str(out)),
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    return out


def jpeg_bytes(width: int = 640, height: int = 480, seed: int = 0) -> bytes:
    """A deterministic synthetic JPEG (no data files needed)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([(xx * 255 // width), (yy * 255 // height), rng.integers(0, 255, (height, width))], -1)
    ok, buf = cv2.imencode(".jpg", image.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return buf.tobytes()


# --- streaming -----------------------------------------------------------------

def kafka_broker(workdir: Path, **options):
    """A real Apache Kafka broker (KRaft, one node) in ``workdir``, or a one-line skip
    where Java (or Maven, for the first jar fetch) is missing."""
    from support.kafka_broker import KafkaBroker, missing_tools

    reason = missing_tools()
    if reason:
        pytest.skip(reason)
    return KafkaBroker(workdir, **options)


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """One real Apache Kafka broker on loopback for the whole session (tests that stop or
    reconfigure a broker start their own)."""
    kafka = kafka_broker(tmp_path_factory.mktemp("kafka"))
    with kafka:
        print(f"\nKafka broker ready in {kafka.start_seconds:.1f}s on {kafka.bootstrap_servers}")
        yield kafka


@pytest.fixture(scope="module")
def tansu_broker(tmp_path_factory):
    """The embedded broker of `rtvi up` (Tansu, in memory), for its smoke tests."""
    from rtvi.local.broker import TansuBroker

    with TansuBroker(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log") as b:
        yield b


def make_topics(broker, test_name: str) -> dict[str, str]:
    """Fresh frames/predictions topics (2 partitions) and a group id named after a test."""
    from rtvi.streaming.kafka_config import KafkaConfig, ensure_topics

    name = test_name.replace("[", "-").replace("]", "").replace("_", "-")[:60]
    names = {"frames": f"frames-{name}", "predictions": f"predictions-{name}", "group": f"group-{name}"}
    ensure_topics(KafkaConfig(bootstrap_servers=broker.bootstrap_servers),
                  {names["frames"]: 2, names["predictions"]: 2})
    return names


@pytest.fixture
def topics(broker, request):
    return make_topics(broker, request.node.name)


def produce_frames(tmp_path: Path, broker, topic: str, frames_per_stream: int, streams: int = 2, fps: float = 0,
                   size: str = "320x240") -> None:
    proc = Proc(
        rtvi_command("produce", "--bootstrap-servers", broker.bootstrap_servers, "--topic", topic,
                     "--streams", str(streams), "--max-frames", str(frames_per_stream), "--fps", str(fps),
                     "--synthetic-size", size, "--report-interval", "0"),
        tmp_path / f"produce-{time.monotonic_ns()}.log",
    )
    try:
        assert proc.popen.wait(120) == 0, proc.output
    finally:
        proc.kill()
    assert f"{frames_per_stream * streams} delivered, 0 delivery errors" in proc.output, proc.output


class ConsumerProc(Proc):
    """`rtvi consume` with its metrics and health endpoint on a free loopback port."""

    def __init__(self, args: list[str], log_path: Path, metrics_port: int, env: dict[str, str] | None = None) -> None:
        super().__init__(args, log_path, env)
        self.url = f"http://127.0.0.1:{metrics_port}"

    def figures(self):
        """Its metrics now (``rtvi.streaming.probe.PodMetrics``), or None while it does not answer."""
        from rtvi.streaming.probe import scrape

        return scrape("consumer", f"{self.url}/metrics")

    def wait_figures(self, predicate, timeout: float = 120):
        """Its metrics once ``predicate`` holds for them (while it runs), else AssertionError."""
        from rtvi.streaming.probe import wait_until

        try:
            return wait_until(f"{self.url}/metrics", predicate, timeout, lambda: self.popen.poll() is None)[1]
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.output[-3000:]}") from None


def start_consumer(tmp_path: Path, broker, topics: dict, inference_address: str, *extra: str) -> ConsumerProc:
    metrics_port = free_port()
    return ConsumerProc(
        rtvi_command(
            "consume", "--bootstrap-servers", broker.bootstrap_servers, "--topic", topics["frames"],
            "--predictions-topic", topics["predictions"], "--group", topics["group"],
            "--inference-url", inference_address, "--metrics-port", str(metrics_port), "--metrics-host", "127.0.0.1",
            "--session-timeout-ms", "6000", "--report-interval", "0", "--retry-backoff-max-s", "0.5", *extra,
        ),
        tmp_path / f"consume-{time.monotonic_ns()}.log",
        metrics_port,
    )


def read_records(broker, topic: str, until: int, timeout: float = 120) -> list[tuple[int, int, bytes, bytes]]:
    """(partition, offset, key, value) of ``topic`` from the beginning, until ``until`` are read or time runs out."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    # Assigned, not subscribed: no group join, so a read takes milliseconds.
    reader = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "rtvi-test-reader",
                       "enable.auto.commit": False})
    partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    records = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < until and time.monotonic() < deadline:
            for msg in reader.consume(num_messages=500, timeout=0.2):
                if msg.error() is None:
                    records.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
    finally:
        reader.close()
    return records


def read_predictions(broker, topic: str, until: int, timeout: float = 120) -> list[dict]:
    return [json.loads(value) for _, _, _, value in read_records(broker, topic, until, timeout)]


def end_offsets(broker, topic: str, partitions: int = 2, timeout: float = 30) -> dict[int, int]:
    """Next offset (high watermark) of each non-empty partition of ``topic``. A broker just
    restarted has no partition leaders for a few seconds: those answers are retried until
    ``timeout``."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    leaderless = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError._TRANSPORT,
                  KafkaError._TIMED_OUT}

    deadline = time.monotonic() + timeout
    probe = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "rtvi-test-probe"})
    try:
        ends = {}
        for p in range(partitions):
            while True:
                try:
                    ends[p] = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    break
                except KafkaException as exc:
                    if exc.args[0].code() not in leaderless or time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
    finally:
        probe.close()
    return {p: end for p, end in ends.items() if end > 0}


def committed_offsets(broker, group: str, topic: str, partitions: int = 2) -> dict[int, int]:
    """The group's committed offset of each partition that has one."""
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": group})
    try:
        result = probe.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        probe.close()
    return {tp.partition: tp.offset for tp in result if tp.offset >= 0}


# The real Kubernetes control plane (`kube` fixture): its build starts in the background at
# collection and its tests run last. Imported at the end: that module uses Proc and free_port.
from support.docker_session import docker_engine, rtvi_images  # noqa: E402,F401
from support.kube_session import (  # noqa: E402,F401
    kube, kube_node, pytest_collection_finish, pytest_collection_modifyitems, pytest_sessionfinish, pytest_terminal_summary,
)
