"""`rtvi consume`: build the real parts (Kafka clients, the v2 client, metrics on the default
registry, the HTTP endpoint, signal handlers) and run the loop with them."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from confluent_kafka import Consumer, Producer

from rtvi.errors import ExitCode
from rtvi.protocol.client import InferenceClient
from rtvi.streaming.consumer.config import ConsumerConfig
from rtvi.streaming.consumer.health import Health, serve_http
from rtvi.streaming.consumer.loop import FrameConsumer
from rtvi.streaming.consumer.metrics import ConsumerMetrics
from rtvi.streaming.consumer.outcomes import Outcomes
from rtvi.streaming.kafka_config import error_logger

log = logging.getLogger("rtvi.consume")


def build(config: ConsumerConfig, metrics: ConsumerMetrics | None = None) -> FrameConsumer:
    """A consumer with real Kafka clients and a real v2 client, counting into ``metrics``."""
    outcomes = Outcomes(metrics or ConsumerMetrics(), config.stream_label_limit)
    on_error = error_logger(log)
    consumer = Consumer(config.consumer(
        "consumer", config.group,
        **{"session.timeout.ms": config.session_timeout_ms, "statistics.interval.ms": 5000,
           "stats_cb": outcomes.kafka_statistics, "error_cb": on_error},
    ))
    producer = Producer(config.producer("predictions", error_cb=on_error))
    client = InferenceClient(config.inference_url, config.model, config.max_record_bytes * config.batch_size,
                             tls=config.inference_tls)
    return FrameConsumer(config, consumer=consumer, producer=producer, client=client, outcomes=outcomes,
                         health=Health(config.liveness_timeout_s), policy=config.dispatch_policy())


async def consume(config: ConsumerConfig) -> ExitCode:
    consumer = build(config)
    if config.metrics_port:
        serve_http(config.metrics_host, config.metrics_port, consumer.health, consumer.outcomes.metrics.registry)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: setattr(consumer, "stopping", True))
    if config.debug_stall_s:
        # A diagnostic, off by default: a real stall of the loop, to watch /livez fail.
        loop.add_signal_handler(signal.SIGUSR1, _stall, config.debug_stall_s)
    await consumer.run()
    return ExitCode.OK


def _stall(seconds: float) -> None:
    log.warning("SIGUSR1: blocking the event loop for %gs (--debug-stall-s diagnostic)", seconds)
    time.sleep(seconds)
