"""`rtvi serve`: the gRPC server process and its lifecycle.

Order matters for Kubernetes: the port opens first with readiness NOT_SERVING, so the
startupProbe sees a live process while models load and warm up; SERVING follows
warm-up of every model; SIGTERM flips to NOT_SERVING and lets in-flight requests finish.

With TLS (``--tls-cert``; mutual with ``--tls-client-ca``) the serving port speaks TLS
only, and the kubelet, whose gRPC probes cannot, asks the same health service on a
plaintext ``--health-port`` that serves nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health_pb2_grpc
from prometheus_client import start_http_server

from rtvi.errors import BadInput, ExitCode, WorkFailed
from rtvi.protocol._generated import grpc_service_pb2_grpc as pb_grpc
from rtvi.protocol.tls import server_credentials
from rtvi.serving import metrics
from rtvi.serving.batcher import BatchStats
from rtvi.serving.config import ServerConfig
from rtvi.serving.dataplane import DataPlane
from rtvi.serving.errors import ModelLoadError, first_line
from rtvi.serving.grpc_servicer import InferenceServicer
from rtvi.serving.hardware import available_cpus, cpu_info
from rtvi.serving.health import Health
from rtvi.serving.interceptors import ServingInterceptor
from rtvi.serving.repository import ModelRepository

log = logging.getLogger("rtvi.serve")

# Connections are recycled so clients that balance over a headless Service
# (dns:/// + round_robin) re-resolve and pick up pods the HPA added.
MAX_CONNECTION_AGE_MS = 5 * 60 * 1000
MAX_CONNECTION_AGE_GRACE_MS = 60 * 1000


def grpc_options(config: ServerConfig) -> list[tuple[str, int]]:
    return [
        # The data plane enforces max_message_bytes with a clear error and a metric;
        # the transport cap above it bounds memory for anything larger.
        ("grpc.max_receive_message_length", 2 * config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        # Fail loudly when the port is taken instead of silently sharing it.
        ("grpc.so_reuseport", 0),
        ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
        ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def _listen(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None = None) -> None:
    try:
        if credentials is None:
            server.add_insecure_port(address)
        else:
            server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise BadInput(f"cannot listen on {address}: {exc} (is the port in use?)") from None


async def _health_server(health: Health, config: ServerConfig) -> grpc.aio.Server | None:
    """The plaintext server of --health-port: grpc.health.v1 alone, the same states as --port."""
    if not config.health_port:
        return None
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    _listen(server, f"{config.host}:{config.health_port}")
    await server.start()
    return server


def _record_batch(model: str, stats: BatchStats) -> None:
    metrics.BATCH_SIZE.labels(model).observe(stats.size)
    metrics.COMPUTE_SECONDS.labels(model).observe(stats.compute_seconds)
    for seconds in stats.queue_seconds:
        metrics.QUEUE_SECONDS.labels(model).observe(seconds)


async def serve(config: ServerConfig) -> ExitCode:
    """Run until SIGTERM/SIGINT. A model that cannot be loaded ends it with ModelLoadError
    (exit 2) once the server has stopped cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    repository = ModelRepository(config)  # a bad --model-repository raises ModelLoadError: exit 2
    preprocess_pool = ThreadPoolExecutor(config.preprocess_workers, thread_name_prefix="rtvi-preprocess")
    dataplane = DataPlane(repository, config.max_message_bytes, preprocess_pool)
    health = Health(config.liveness_timeout_s)
    await health.start()

    server = grpc.aio.server(options=grpc_options(config), interceptors=[ServingInterceptor(repository.metric_label)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(dataplane), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    address = f"{config.host}:{config.port}"
    tls = config.tls  # bad certificate files raise TlsFilesError: exit 2
    _listen(server, address, server_credentials(tls) if tls else None)
    await server.start()
    health_server = await _health_server(health, config)
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.host)
    cpu = cpu_info()
    security = "plaintext" if tls is None else "TLS, client certificates required" if tls.ca else "TLS"
    log.info("listening on %s (%s; metrics on :%s; health also on plaintext :%s); CPU %s, %d usable CPUs; "
             "loading %s, health NOT_SERVING", address, security, config.metrics_port, config.health_port or "-",
             cpu.describe(), available_cpus(), ", ".join(repository.models))

    load_task = asyncio.ensure_future(repository.load_all(_record_batch))
    stop_task = asyncio.ensure_future(stop.wait())
    await asyncio.wait({load_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    failure: BaseException | None = None
    watchdog = None
    if load_task.done() and not stop.is_set():
        failure = load_task.exception()
        if failure is not None and not isinstance(failure, ModelLoadError):
            # a bug or an engine failure we did not foresee: say so, stop cleanly
            log.error("loading the models failed", exc_info=failure)
            failure = WorkFailed(f"loading the models failed: {first_line(failure)}")
        if failure is None:
            for name in repository.models:
                metrics.READY.labels(name).set(1)
            await health.set_ready(True)
            watchdog = asyncio.ensure_future(health.watch(repository.stalled_seconds))
            log.info("every model ready (%d); health SERVING", len(repository.models))
            await stop_task
    else:
        load_task.cancel()

    for name in repository.models:
        metrics.READY.labels(name).set(0)
    dataplane.shutting_down = True
    await health.shutdown()
    if config.shutdown_delay_s and failure is None:
        log.info("shutting down: health NOT_SERVING, still serving for %.1fs", config.shutdown_delay_s)
        await asyncio.sleep(config.shutdown_delay_s)
    log.info("shutting down: refusing new requests, draining in-flight requests (grace %.0fs)", config.shutdown_grace_s)
    await server.stop(config.shutdown_grace_s)
    if health_server is not None:
        await health_server.stop(0)
    if watchdog:
        watchdog.cancel()
    await repository.stop()
    stop_task.cancel()
    preprocess_pool.shutdown(wait=False, cancel_futures=True)
    log.info("stopped")
    if failure is not None:
        raise failure
    return ExitCode.OK
