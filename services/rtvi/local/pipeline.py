"""`rtvi up`: broker, inference server, consumer and producer on one machine.

Each service runs as its own `rtvi` process, exactly as it would in a pod, so local
mode exercises the same code paths as the cluster. Logs go to a work folder. What
`rtvi up` knows of the services it learns as a probe would: the server's grpc.health,
the consumer's /readyz and its Prometheus metrics (status lines, the verdict). Bad
input (a missing video file, an absent camera, an unreachable broker) is reported in
one line before anything starts.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rtvi.net import free_port
from rtvi.errors import ExitCode, WorkFailed
from rtvi.local.broker import TansuBroker
from rtvi.local.config import UpConfig
from rtvi.local.status import judge, status_line
from rtvi.streaming.kafka_config import KafkaConfig, check_broker, ensure_topics
from rtvi.streaming.progress import PodMetrics, healthy, scrape
from rtvi.streaming.report import BEGIN, END
from rtvi.streaming.producer.sources import check_capture

log = logging.getLogger("rtvi.up")

FRAMES, PREDICTIONS = "frames", "predictions"
# After the producer stops: how long the consumer must stay idle to count as caught up.
IDLE_S = 1.5


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


def serving(address: str) -> bool:
    """The inference server's grpc.health readiness."""
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING


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
    """The consumer's final metrics block, shown to the user as it wrote it."""
    start = text.rfind(BEGIN)
    end = text.find(END, start)
    return text[start : end + len(END)] if start >= 0 and end >= 0 else ""


def _preflight(config: UpConfig) -> None:
    """Raise SourceError / BrokerUnreachable for input that cannot work, before starting anything."""
    if config.video:
        check_capture(config.video)
    elif config.camera >= 0:
        check_capture(config.camera)
    if config.bootstrap_servers:
        check_broker(KafkaConfig(bootstrap_servers=config.bootstrap_servers), timeout=3.0)


def _wait_caught_up(consumer: Service, metrics_url: str, deadline: float, stopped) -> None:
    """Until the consumer has read nothing new and holds nothing for IDLE_S (or the deadline)."""
    last_consumed, idle_since = -1, time.monotonic()
    while consumer.running() and time.monotonic() < deadline and not stopped():
        current = scrape("local", metrics_url)
        if current is None or current.consumed != last_consumed or current.buffered or current.in_flight:
            last_consumed = current.consumed if current else -1
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= IDLE_S:
            return
        time.sleep(0.2)


def run_pipeline(config: UpConfig) -> ExitCode:
    """Bad input (SourceError, exit 2) or an unreachable broker (exit 4) is found before anything
    starts; a service that fails to start or stops early is WorkFailed (exit 1); the verdict
    ends the run (``status.judge``)."""
    _preflight(config)
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
        precision = ["--precision", config.precision] if config.precision else []
        server = Service("serve", [
            "serve", "--host", "127.0.0.1", "--port", str(grpc_port), "--metrics-port", str(server_metrics),
            "--model", config.model, "--weights", weights, *precision,
        ], work_dir)
        services.append(server)
        address = f"127.0.0.1:{grpc_port}"
        deadline = time.monotonic() + 300
        while not serving(address):
            if not server.running() or time.monotonic() > deadline or stop_requested:
                log.error("inference server log:\n%s", server.output[-3000:])
                raise WorkFailed(f"the inference server did not become ready; see {server.log_path}")
            time.sleep(0.2)
        log.info("inference server SERVING on %s (metrics :%d)", address, server_metrics)

        consumer = Service("consume", [
            "consume", "--bootstrap-servers", bootstrap, "--inference-url", address, "--model", config.model,
            "--metrics-port", str(consumer_metrics), "--metrics-host", "127.0.0.1",
            "--report-interval", "0", "--max-frame-age-ms", str(config.max_frame_age_ms),
            "--batch-size", str(config.batch_size), "--max-in-flight", str(config.max_in_flight),
            # One local member: a short session makes joining the group quick.
            "--session-timeout-ms", "6000", "--readiness-interval-s", "1",
        ], work_dir)
        services.append(consumer)
        deadline = time.monotonic() + 60
        while not healthy(f"http://127.0.0.1:{consumer_metrics}/readyz"):
            if not consumer.running() or time.monotonic() > deadline or stop_requested:
                log.error("consumer log:\n%s", consumer.output[-3000:])
                raise WorkFailed(f"the consumer did not become ready (/readyz); see {consumer.log_path}")
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
        mode = (f"real time (frames older than {config.max_frame_age_ms:g} ms are dropped)" if config.max_frame_age_ms
                else "keep-all (every frame is predicted, however late)")
        log.info("producing for %.0fs, %s; logs in %s", config.duration, mode, work_dir)

        metrics_url = f"http://127.0.0.1:{consumer_metrics}/metrics"
        started = last_time = time.monotonic()
        last: PodMetrics | None = None
        next_report = started + config.report_interval
        while producer.running() and not stop_requested:
            if not consumer.running() or not server.running():
                log.error("a service exited early; see %s", work_dir)
                break
            now = time.monotonic()
            if now >= next_report:
                current = scrape("local", metrics_url)
                if current is not None:
                    log.info("%s", status_line(now - started, last, current, now - last_time))
                    last, last_time = current, now
                next_report += config.report_interval
            time.sleep(0.2)
        producer_rc = producer.stop()
        _wait_caught_up(consumer, metrics_url, time.monotonic() + 60, lambda: stop_requested)
        final = scrape("local", metrics_url)
        consumer_rc = consumer.stop()
        print(producer.output.strip().splitlines()[-1] if producer.output.strip() else "producer printed nothing")
        block = _last_block(consumer.output)
        print(block or f"consumer printed no metrics block (exit {consumer_rc}); see {consumer.log_path}")
        print(f"logs: {work_dir}")
        if producer_rc or consumer_rc:
            raise WorkFailed(f"producer exited {producer_rc}, consumer exited {consumer_rc}; see {work_dir}")
        verdict = judge(final, config.max_p95_ms)
        if verdict.error is None:
            print(f"rtvi up: {verdict.line}")
        return verdict.conclude()
    finally:
        for service in reversed(services):
            service.stop()
        if broker:
            broker.stop()
