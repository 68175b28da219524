"""`rtvi serve`: the gRPC server process and its lifecycle.

Order matters for Kubernetes: the port opens first with health NOT_SERVING, so the
startupProbe sees a live process while the model loads and warms up; SERVING follows
warm-up; SIGTERM flips to NOT_SERVING and lets in-flight requests finish.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from prometheus_client import start_http_server

from rtvi.protocol._generated import grpc_service_pb2_grpc as pb_grpc
from rtvi.serving import metrics
from rtvi.serving.batcher import BatchStats, DynamicBatcher
from rtvi.serving.config import ServerConfig
from rtvi.serving.servicer import InferenceServicer

log = logging.getLogger("rtvi.serve")

SERVICE_NAME = "inference.GRPCInferenceService"
# Connections are recycled so clients that balance over a headless Service
# (dns:/// + round_robin) re-resolve and pick up pods the HPA added.
MAX_CONNECTION_AGE_MS = 5 * 60 * 1000
MAX_CONNECTION_AGE_GRACE_MS = 60 * 1000


def grpc_options(config: ServerConfig) -> list[tuple[str, int]]:
    return [
        # The servicer enforces max_message_bytes with a clear error and a metric;
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


def _record_batch(model: str, stats: BatchStats) -> None:
    metrics.BATCH_SIZE.labels(model).observe(stats.size)
    metrics.COMPUTE_SECONDS.labels(model).observe(stats.compute_seconds)
    for seconds in stats.queue_seconds:
        metrics.QUEUE_SECONDS.labels(model).observe(seconds)


async def _set_health(health: HealthServicer, status: int) -> None:
    for service in ("", SERVICE_NAME):
        await health.set(service, status)


async def serve(config: ServerConfig) -> int:
    """Run until SIGTERM/SIGINT; return the process exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    preprocess_pool = ThreadPoolExecutor(config.preprocess_workers, thread_name_prefix="rtvi-preprocess")
    compute_pool = ThreadPoolExecutor(config.instances, thread_name_prefix="rtvi-compute")
    model_name = config.served_name
    servicer = InferenceServicer(model_name, config.max_batch_size, config.max_message_bytes, preprocess_pool)
    health = HealthServicer()
    await _set_health(health, health_pb2.HealthCheckResponse.NOT_SERVING)

    server = grpc.aio.server(options=grpc_options(config))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    address = f"{config.host}:{config.port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        log.error("cannot listen on %s: %s (is the port in use?)", address, exc)
        return 1
    await server.start()
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.host)
    log.info("listening on %s (metrics on :%s); loading %s, health NOT_SERVING", address, config.metrics_port, config.model)

    # torch is imported here, after the port is open, so probes answer during the import.
    from rtvi.serving.model import ImageClassifier, ModelLoadError

    classifier = ImageClassifier(config)

    def load():
        started = time.perf_counter()
        spec = classifier.load()
        classifier.warmup(tuple(sorted({1, config.max_batch_size})))
        return spec, time.perf_counter() - started

    batcher: DynamicBatcher | None = None
    load_task = loop.run_in_executor(compute_pool, load)
    stop_task = asyncio.ensure_future(stop.wait())
    await asyncio.wait({load_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    exit_code = 0
    if load_task.done() and not stop.is_set():
        try:
            spec, seconds = load_task.result()
        except ModelLoadError as exc:
            log.error("%s", exc)
            exit_code = 2
        else:
            def run(kind, inputs):
                if kind[0] == "pixels":
                    return classifier.predict_pixels(inputs)
                return classifier.predict_images(inputs)

            batcher = DynamicBatcher(
                run, compute_pool, config.max_batch_size, config.max_queue_delay_ms / 1000,
                on_batch=lambda stats: _record_batch(model_name, stats), concurrency=config.instances,
            )
            batcher.start()
            servicer.set_ready(spec, batcher)
            metrics.READY.labels(model_name).set(1)
            await _set_health(health, health_pb2.HealthCheckResponse.SERVING)
            log.info(
                "model %s ready in %.1fs (device=%s precision=%s channels_last=%s max_batch=%d instances=%d); "
                "health SERVING", model_name, seconds, classifier.device, config.precision, config.channels_last,
                config.max_batch_size, config.instances,
            )
            await stop_task

    metrics.READY.labels(model_name).set(0)
    servicer.shutting_down = True
    await health.enter_graceful_shutdown()
    if config.shutdown_delay_s and batcher:
        log.info("shutting down: health NOT_SERVING, still serving for %.1fs", config.shutdown_delay_s)
        await asyncio.sleep(config.shutdown_delay_s)
    log.info("shutting down: refusing new requests, draining in-flight requests (grace %.0fs)", config.shutdown_grace_s)
    await server.stop(config.shutdown_grace_s)
    if batcher:
        await batcher.stop()
    stop_task.cancel()
    preprocess_pool.shutdown(wait=False, cancel_futures=True)
    compute_pool.shutdown(wait=False, cancel_futures=True)
    log.info("stopped")
    return exit_code
