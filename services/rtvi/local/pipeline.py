"""`rtvi up`: broker, inference server, consumer and producer on one machine.

Each service runs as its own `rtvi` process, exactly as it would in a pod, so local
mode exercises the same code paths as the cluster. Logs go to a work folder; the
consumer's final metrics block is printed at the end.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rtvi._private.net import free_port
from rtvi.cluster.aggregate import from_prometheus
from rtvi.local.broker import BrokerError, TansuBroker
from rtvi.local.config import UpConfig
from rtvi.streaming.kafka_config import KafkaConfig, ensure_topics
from rtvi.streaming.report import BEGIN, END

log = logging.getLogger("rtvi.up")

FRAMES, PREDICTIONS = "frames", "predictions"
class Service:
    """One `rtvi` subcommand as a child process logging to a file."""

    def __init__(self, name: str, args: list[str], work_dir: Path) -> None:
        self.name = name
        self.log_path = work_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "rtvi", *args], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env)

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("%s did not stop within %.0fs; killing it", self.name, timeout)
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING


def consumer_done_count(metrics_port: int) -> int:
    """Frames the consumer finished (processed, failed or dropped), from its Prometheus endpoint."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0
    return from_prometheus("local", text).done


def _resolve_weights(config: UpConfig) -> str:
    if config.weights != "auto":
        return config.weights
    from rtvi.serving.engines.torch import pretrained_weights_cached

    if pretrained_weights_cached(config.model):
        return "DEFAULT"
    banner = "!" * 78
    log.warning(
        "\n%s\n  No pretrained %s weights in the torch hub cache: running with RANDOM weights.\n"
        "  Every label below is meaningless. Fill the cache (python -c \"import torchvision; "
        "torchvision.models.get_model('%s', weights='DEFAULT')\") on a machine with internet\n  access, "
        "or pass --weights PATH.\n%s", banner, config.model, config.model, banner,
    )
    return "none"


def _last_block(text: str) -> str:
    start = text.rfind(BEGIN)
    end = text.find(END, start)
    return text[start : end + len(END)] if start >= 0 and end >= 0 else ""


def run_pipeline(config: UpConfig) -> int:
    work_dir = Path(config.work_dir or tempfile.mkdtemp(prefix="rtvi-up-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    services: list[Service] = []
    broker: TansuBroker | None = None
    stop_requested = False

    def request_stop(*_: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        bootstrap = config.bootstrap_servers
        if not bootstrap:
            broker = TansuBroker(log_path=work_dir / "broker.log").start()
            bootstrap = broker.bootstrap_servers
            log.info("embedded Tansu broker on %s", bootstrap)
        ensure_topics(KafkaConfig(bootstrap_servers=bootstrap), {FRAMES: config.streams, PREDICTIONS: config.streams})

        weights = _resolve_weights(config)
        grpc_port, server_metrics, consumer_metrics = free_port(), free_port(), free_port()
        server = Service("serve", [
            "serve", "--host", "127.0.0.1", "--port", str(grpc_port), "--metrics-port", str(server_metrics),
            "--model", config.model, "--weights", weights, "--precision", config.precision,
        ], work_dir)
        services.append(server)
        address = f"127.0.0.1:{grpc_port}"
        deadline = time.monotonic() + 300
        while not _serving(address):
            if not server.running() or time.monotonic() > deadline or stop_requested:
                log.error("inference server did not become ready:\n%s", server.output[-3000:])
                return 1
            time.sleep(0.2)
        log.info("inference server SERVING on %s (metrics :%d)", address, server_metrics)

        consumer = Service("consume", [
            "consume", "--bootstrap-servers", bootstrap, "--inference-url", address, "--model", config.model,
            "--metrics-port", str(consumer_metrics), "--metrics-host", "127.0.0.1",
            "--report-interval", "0", "--max-frame-age-ms", str(config.max_frame_age_ms),
            # One local member: a short session makes joining the group quick.
            "--session-timeout-ms", "6000",
        ], work_dir)
        services.append(consumer)
        deadline = time.monotonic() + 60
        while "assigned partitions" not in consumer.output:
            if not consumer.running() or time.monotonic() > deadline or stop_requested:
                log.error("consumer did not join its group:\n%s", consumer.output[-3000:])
                return 1
            time.sleep(0.1)
        source = (["--source", "video", "--video", config.video, "--loop", "--streams", str(config.streams)]
                  if config.video else
                  ["--source", "webcam", "--camera", str(config.camera), "--streams", "1"]
                  if config.camera >= 0 else ["--source", "synthetic", "--streams", str(config.streams)])
        producer = Service("produce", [
            "produce", "--bootstrap-servers", bootstrap, "--duration", str(config.duration),
            "--fps", str(config.fps), "--report-interval", "0", *source,
        ], work_dir)
        services.append(producer)
        log.info("producing for %.0fs; logs in %s", config.duration, work_dir)

        started = time.monotonic()
        next_report = started + config.report_interval
        while producer.running() and not stop_requested:
            if not consumer.running() or not server.running():
                log.error("a service exited early; see %s", work_dir)
                break
            if time.monotonic() >= next_report:
                log.info("%3.0fs: %d frames classified", time.monotonic() - started, consumer_done_count(consumer_metrics))
                next_report += config.report_interval
            time.sleep(0.2)
        producer.stop()
        produced = _produced_count(producer.output)
        # Let the consumer finish what was published, then stop it for its final block.
        catch_up = time.monotonic() + 60
        while consumer.running() and consumer_done_count(consumer_metrics) < produced and time.monotonic() < catch_up \
                and not stop_requested:
            time.sleep(0.2)
        consumer_rc = consumer.stop()
        block = _last_block(consumer.output)
        print(producer.output.strip().splitlines()[-1] if producer.output.strip() else "producer printed nothing")
        print(block or f"consumer printed no metrics block (exit {consumer_rc}); see {consumer.log_path}")
        print(f"logs: {work_dir}")
        failed = "ERRORS\n  total: 0" not in block
        return 1 if failed or consumer_rc else 0
    except BrokerError as exc:
        log.error("%s", exc)
        return 2
    finally:
        for service in reversed(services):
            service.stop()
        if broker:
            broker.stop()


def _produced_count(output: str) -> int:
    for line in reversed(output.splitlines()):
        if line.startswith("rtvi produce:") and " delivered," in line:
            return int(line.split(" delivered,")[0].rsplit(" ", 1)[1])
    return 0
