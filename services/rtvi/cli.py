"""The `rtvi` command: one entry point, one subcommand per service.

Each subcommand's flags come from its service's config dataclass, so every flag is
also an ``RTVI_*`` environment variable. Heavy imports (torch) happen inside the
command that needs them: `rtvi consume` and `rtvi produce` run without torch.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable

from rtvi import __version__
from rtvi.errors import ExitCode, RtviError
from rtvi.settings import ConfigError, add_arguments, from_namespace
from rtvi.cluster.config import LoadtestConfig, StatusConfig
from rtvi.export.config import ExportConfig
from rtvi.local.config import UpConfig
from rtvi.serving.config import ServerConfig
from rtvi.streaming.consumer.config import ConsumerConfig
from rtvi.streaming.ingest.config import IngestConfig
from rtvi.streaming.producer.config import ProducerConfig
from rtvi.view.config import ViewConfig


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _serve(args: argparse.Namespace) -> ExitCode:
    from rtvi.serving.server import serve

    return asyncio.run(serve(from_namespace(ServerConfig, args)))


def _produce(args: argparse.Namespace) -> ExitCode:
    from rtvi.streaming.producer.producer import produce

    return produce(from_namespace(ProducerConfig, args))


def _ingest(args: argparse.Namespace) -> ExitCode:
    from rtvi.streaming.ingest.supervisor import ingest

    return ingest(from_namespace(IngestConfig, args))


def _consume(args: argparse.Namespace) -> ExitCode:
    from rtvi.streaming.consumer.run import consume

    return asyncio.run(consume(from_namespace(ConsumerConfig, args)))


def _view(args: argparse.Namespace) -> ExitCode:
    from rtvi.view.app import run_view

    return asyncio.run(run_view(from_namespace(ViewConfig, args)))


def _up(args: argparse.Namespace) -> ExitCode:
    from rtvi.local.pipeline import run_pipeline

    return run_pipeline(from_namespace(UpConfig, args))


def _export(args: argparse.Namespace) -> ExitCode:
    from rtvi.export.run import run_export

    return run_export(from_namespace(ExportConfig, args))


def _loadtest(args: argparse.Namespace) -> ExitCode:
    from rtvi.cluster.loadtest import run_loadtest

    return run_loadtest(from_namespace(LoadtestConfig, args))


def _status(args: argparse.Namespace) -> ExitCode:
    from rtvi.cluster.status import run_status

    return run_status(from_namespace(StatusConfig, args))


COMMANDS: dict[str, tuple[type, Callable[[argparse.Namespace], ExitCode], str]] = {
    "serve": (
        ServerConfig,
        _serve,
        "Serve image classifiers (a torchvision architecture, a model directory or a repository of them) "
        "over the Open Inference Protocol v2 (gRPC) on torch, ONNX Runtime or OpenVINO, with dynamic batching, "
        "grpc.health.v1 readiness and liveness, and Prometheus metrics.",
    ),
    "produce": (
        ProducerConfig,
        _produce,
        "Publish frames from a video file, a webcam, an image folder, a camera URL (RTSP/HTTP) or a "
        "synthetic pattern to a Kafka/Redpanda topic as JPEG records keyed by stream, with capture time in headers.",
    ),
    "ingest": (
        IngestConfig,
        _ingest,
        "Read a fleet of network cameras (RTSP, HTTP MJPEG/HLS) into a Kafka/Redpanda topic, each camera on "
        "its own reader at its own rate, keeping only its latest frame, reconnecting with backoff, with "
        "per-camera health (/metrics, /livez, /readyz); the cameras file is re-read on SIGHUP and on change.",
    ),
    "consume": (
        ConsumerConfig,
        _consume,
        "Classify frames from a Kafka/Redpanda topic with a v2 inference service and publish one "
        "prediction per frame (at-least-once; offsets committed after predictions are acknowledged).",
    ),
    "view": (
        ViewConfig,
        _view,
        "Serve a live web page of every stream: its latest classified frame with the top-k labels drawn over it, "
        "processed fps, p50/p95 capture-to-prediction latency, dropped and failed counts, stale and failed marks, "
        "and a latency chart per stream; plus GET /api/streams, /livez, /readyz and /metrics. Reads the frames and "
        "predictions topics from their latest offsets, joins no consumer group and commits nothing.",
    ),
    "up": (
        UpConfig,
        _up,
        "Run the whole pipeline on this machine (embedded broker, inference server, consumer, "
        "producer) for a while and print the consumer's metrics block. No cluster, no Docker.",
    ),
    "export": (
        ExportConfig,
        _export,
        "Write a model directory for `rtvi serve --model DIR` from a torchvision model, a factory or "
        "another model directory: ONNX (fp32, or int8 calibrated on images or a frames topic, with an "
        "accuracy report), TorchScript or torch.export.",
    ),
    "loadtest": (
        LoadtestConfig,
        _loadtest,
        "Run a producer Job against a release in Kubernetes, wait for it, and summarize what its "
        "consumers measured (frames, throughput, latency percentiles, errors, HPA replicas).",
    ),
    "status": (
        StatusConfig,
        _status,
        "Show a release's Deployments, autoscaler, pods that are not ready and consumer lag.",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtvi",
        description="Real-time video inference: frames from Kafka/Redpanda to a v2 inference server and back.",
        epilog="Every flag can also be set as an RTVI_<FLAG> environment variable (e.g. RTVI_PORT=9001).",
    )
    parser.add_argument("--version", action="version", version=f"rtvi {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("RTVI_LOG_LEVEL", "info").lower(),
                        choices=["debug", "info", "warning", "error"], help="[env RTVI_LOG_LEVEL; default: info]")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (config_cls, handler, summary) in COMMANDS.items():
        command = sub.add_parser(name, help=summary.split(". ")[0].rstrip("."), description=summary)
        add_arguments(command, config_cls)
        command.set_defaults(handler=handler, config_cls=config_cls)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; the only place where errors become exit codes (``rtvi.errors``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        parser.error(f"{args.command}: {exc}")  # the usage, the line, exit 2
    except RtviError as exc:
        print(f"rtvi {args.command}: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
