"""`rtvi up`: broker, inference server, consumer and producer on one machine.

Each service runs as its own `rtvi` process, exactly as it would in a pod, so local
mode exercises the same code paths as the cluster. Logs go to a work folder. What
`rtvi up` knows of the services it learns as a probe would: the server's grpc.health,
the consumer's /readyz and its Prometheus metrics (status lines, the verdict). Bad
input (a missing video file, an absent camera, an unreachable broker) is reported in
one line before anything starts.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rtvi.deadline import Deadline
from rtvi.errors import BadInput, ExitCode, WorkFailed
from rtvi.local.broker import TansuBroker
from rtvi.local.config import UpConfig
from rtvi.local.status import judge, status_line
from rtvi.net import free_port, port_free
from rtvi.protocol.tls import InferenceTlsConfig
from rtvi.serving.config import ServerConfig
from rtvi.serving.loader import resolve_source
from rtvi.serving.modeldir import is_model_directory
from rtvi.settings import ENV_PREFIX, secret_environment, to_argv
from rtvi.streaming.consumer import report
from rtvi.streaming.consumer.config import ConsumerConfig
from rtvi.streaming.kafka_config import KafkaConfig, check_broker, ensure_topics
from rtvi.streaming.probe import PodMetrics, from_samples, healthy, read_samples, scrape, wait_idle
from rtvi.streaming.producer.config import ProducerConfig
from rtvi.streaming.producer.sources import check_capture
from rtvi.view.config import ViewConfig

log = logging.getLogger("rtvi.up")

FRAMES, PREDICTIONS = "frames", "predictions"


class Service:
    """One `rtvi` subcommand as a child process logging to a file, started from its typed config.

    Its command line is rendered from the config (``settings.to_argv``) and it gets no
    ``RTVI_*`` variable of ours, so the config is the whole truth; secret settings travel in
    its environment, never on a command line.
    """

    def __init__(self, command: str, config: Any, work_dir: Path) -> None:
        self.name = command
        self.log_path = work_dir / f"{command}.log"
        self._log = open(self.log_path, "wb")
        env = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}
        env.update(PYTHONUNBUFFERED="1", **secret_environment(config))
        self.proc = subprocess.Popen([sys.executable, "-m", "rtvi", command, *to_argv(config)], stdout=self._log,
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


@dataclass(frozen=True)
class Plan:
    """The services `rtvi up` starts, as the typed configs their commands parse."""

    server: ServerConfig
    consumer: ConsumerConfig
    producer: ProducerConfig
    view: ViewConfig | None

    @property
    def inference_address(self) -> str:
        return f"{self.server.host}:{self.server.port}"

    @property
    def health_address(self) -> str:
        """Where the server's grpc.health answers in plaintext (its own port unless TLS moved it)."""
        return f"{self.server.host}:{self.server.health_port or self.server.port}"

    @property
    def consumer_url(self) -> str:
        return f"http://{self.consumer.metrics_host}:{self.consumer.metrics_port}"

    @property
    def view_url(self) -> str:
        assert self.view is not None
        return f"http://{self.view.host}:{self.view.port}"


def plan(config: UpConfig, bootstrap: str, weights: str, ports: Iterator[int]) -> Plan:
    """Each service's config from `rtvi up`'s own (pure: ports come from ``ports``)."""
    tls = {"tls_cert": config.tls_cert, "tls_key": config.tls_key, "tls_client_ca": config.tls_client_ca,
           "health_port": next(ports)} if config.tls_cert else {}
    server = ServerConfig(host="127.0.0.1", port=next(ports), metrics_port=next(ports), model=config.model,
                          weights=weights, precision=config.precision, **tls)
    consumer = ConsumerConfig(
        bootstrap_servers=bootstrap, topic=FRAMES, predictions_topic=PREDICTIONS,
        inference_url=f"{server.host}:{server.port}", model=server.served_name,
        **{f.name: getattr(config, f.name) for f in dataclasses.fields(InferenceTlsConfig)},
        metrics_port=next(ports), metrics_host="127.0.0.1", report_interval=0,
        max_frame_age_ms=config.max_frame_age_ms, batch_size=config.batch_size, max_in_flight=config.max_in_flight,
        # One local member: a short session makes joining the group quick.
        session_timeout_ms=6000, readiness_interval_s=1,
    )
    if config.video:
        source = {"source": "video", "video": config.video, "loop": True, "streams": config.streams}
    elif config.camera >= 0:
        source = {"source": "webcam", "camera": config.camera, "streams": 1}
    else:
        source = {"source": "synthetic", "streams": config.streams}
    producer = ProducerConfig(bootstrap_servers=bootstrap, topic=FRAMES, duration=config.duration, fps=config.fps,
                              report_interval=0, **source)
    view = ViewConfig(bootstrap_servers=bootstrap, topic=FRAMES, predictions_topic=PREDICTIONS, host="127.0.0.1",
                      port=config.view_port) if config.view else None
    return Plan(server, consumer, producer, view)


def serving(address: str) -> bool:
    """The inference server's grpc.health readiness."""
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING


def _resolve_weights(config: UpConfig) -> str:
    """``auto``: a torchvision name's pretrained weights if the torch hub cache has them, else random
    init, said loudly. A model directory carries its weights: ``weights`` does not apply."""
    if config.weights != "auto":
        return config.weights
    if is_model_directory(config.model):
        return ServerConfig.weights
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


def _check_model(model: str) -> None:
    """A model `rtvi serve` cannot serve, as it would say it (ModelLoadError, exit 2): a model
    directory is read and checked the way the server checks it at start (files, labels,
    config.yaml), a name against torchvision's classifiers (when torch is installed: an
    ONNX-only install serves names only from its model cache, and says so itself)."""
    if is_model_directory(model) or os.sep in model or model.startswith("."):
        resolve_source(model, "none")
    elif importlib.util.find_spec("torch") is not None:
        resolve_source(model, "none")


def _preflight(config: UpConfig) -> None:
    """Raise for input that cannot work (SourceError, ModelLoadError, BadInput: exit 2;
    BrokerUnreachable: exit 4), before starting anything; the cheap checks first (a model
    name is checked against torchvision, which takes importing torch)."""
    if config.video:
        check_capture(config.video)
    elif config.camera >= 0:
        check_capture(config.camera)
    if config.view:
        if importlib.util.find_spec("starlette") is None or importlib.util.find_spec("uvicorn") is None:
            raise BadInput("the live view needs its packages: pip install 'rtvi[view]', or pass --no-view")
        if not port_free("127.0.0.1", config.view_port):
            raise BadInput(f"port {config.view_port} on 127.0.0.1 is in use: pass --view-port PORT or --no-view")
    if config.bootstrap_servers:
        check_broker(KafkaConfig(bootstrap_servers=config.bootstrap_servers), timeout=3.0)
    _check_model(config.model)


def _wait_ready(service: Service, ready: Callable[[], bool], timeout: float, stopped: Callable[[], bool],
                what: str) -> None:
    deadline = Deadline.from_timeout(timeout)
    while not ready():
        if not service.running() or deadline.expired or stopped():
            log.error("%s log:\n%s", service.name, service.output[-3000:])
            raise WorkFailed(f"{what} did not become ready; see {service.log_path}")
        time.sleep(0.1)


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

    def stopped() -> bool:
        return stop_requested

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        bootstrap = config.bootstrap_servers
        if not bootstrap:
            broker = TansuBroker(log_path=work_dir / "broker.log").start()
            bootstrap = broker.bootstrap_servers
            log.info("embedded Tansu broker on %s", bootstrap)
        ensure_topics(KafkaConfig(bootstrap_servers=bootstrap), {FRAMES: config.streams, PREDICTIONS: config.streams})
        services_plan = plan(config, bootstrap, _resolve_weights(config), iter(free_port, None))

        server = Service("serve", services_plan.server, work_dir)
        services.append(server)
        address = services_plan.inference_address
        _wait_ready(server, lambda: serving(services_plan.health_address), 300, stopped, "the inference server")
        log.info("inference server SERVING on %s (metrics :%d)", address, services_plan.server.metrics_port)

        consumer = Service("consume", services_plan.consumer, work_dir)
        services.append(consumer)
        _wait_ready(consumer, lambda: healthy(f"{services_plan.consumer_url}/readyz"), 60, stopped,
                    "the consumer (/readyz)")
        if services_plan.view is not None:
            view = Service("view", services_plan.view, work_dir)
            services.append(view)
            _wait_ready(view, lambda: healthy(f"{services_plan.view_url}/readyz"), 60, stopped, "the live view")
            log.info("live view of every stream: %s/", services_plan.view_url)
        producer = Service("produce", services_plan.producer, work_dir)
        services.append(producer)
        mode = (f"real time (frames older than {config.max_frame_age_ms:g} ms are dropped)" if config.max_frame_age_ms
                else "keep-all (every frame is predicted, however late)")
        log.info("producing for %.0fs, %s; logs in %s", config.duration, mode, work_dir)

        metrics_url = f"{services_plan.consumer_url}/metrics"
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
        wait_idle(metrics_url, 60, lambda: consumer.running() and not stop_requested)
        samples = read_samples(metrics_url)
        consumer_rc = consumer.stop()
        if samples is not None:
            print(report.render(samples, time.monotonic() - started, config.max_frame_age_ms))
        print(f"logs: {work_dir}")
        if services_plan.view is not None:
            print(f"live view (while it ran): {services_plan.view_url}/")
        if producer_rc or consumer_rc:
            raise WorkFailed(f"producer exited {producer_rc}, consumer exited {consumer_rc}; see {work_dir}")
        verdict = judge(None if samples is None else from_samples("local", samples), config.max_p95_ms)
        if verdict.error is None:
            print(f"rtvi up: {verdict.line}")
        return verdict.conclude()
    finally:
        for service in reversed(services):
            service.stop()
        if broker:
            broker.stop()
