"""`rtvi ingest`: a fleet of cameras into Kafka, each on its own reader, for as long as it runs.

The supervisor owns one :class:`~rtvi.streaming.ingest.reader.CameraReader` per camera
and runs one loop on the main thread that never blocks on a camera: it moves each
camera's latest frame to the publisher when the camera has nothing in flight, serves the
Kafka client's callbacks, runs the readers' watchdogs, applies changes to the cameras
file (SIGHUP, or its bytes changed on disk: a ConfigMap update), and logs a per-camera
status block. A camera that never connects is retried for ever and never touches the
others. The service stops only on SIGTERM/SIGINT (after handing the broker what it
holds) or on bad configuration (one line, exit 2, before anything starts).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack

from prometheus_client import REGISTRY

from rtvi.errors import BadInput, ExitCode
from rtvi.settings import parse_size
from rtvi.streaming.ingest import metrics
from rtvi.streaming.ingest.cameras import (
    Camera, CamerasError, CamerasFile, Defaults, check_unique, parse_flag, plan,
)
from rtvi.streaming.ingest.config import IngestConfig
from rtvi.streaming.ingest.health import Health, serve_http
from rtvi.streaming.ingest.publisher import Publisher
from rtvi.streaming.ingest.reader import CameraReader, ReaderSettings
from rtvi.streaming.producer.sources.base import FrameSource, SourceState, error_reasons
from rtvi.streaming.producer.sources.redact import NativeOutputRedactor
from rtvi.streaming.producer.sources.url import UrlSource, configure_ffmpeg

log = logging.getLogger("rtvi.ingest")

TICK_S = 0.02  # longest a frame waits in its slot for the loop; also the watchdog's resolution


class Supervisor:
    def __init__(self, config: IngestConfig, environ: Mapping[str, str] = os.environ,
                 make_source: Callable[[Camera], FrameSource] | None = None,
                 on_camera: Callable[[Camera], None] = lambda camera: None) -> None:
        """``make_source`` opens a camera (a UrlSource by default); ``on_camera`` hears of every
        camera before it starts (the output redactor learns its secrets)."""
        self.config = config
        defaults = Defaults(config.fps, parse_size(config.resize) if config.resize else None)
        self.settings = ReaderSettings(
            jpeg_quality=config.jpeg_quality, max_frame_bytes=config.max_frame_bytes,
            stall_timeout_s=config.stall_timeout_s, frozen_timeout_s=config.frozen_timeout_s,
            open_timeout_s=config.open_timeout_s, backoff_initial_s=config.backoff_initial_s,
            backoff_max_s=config.backoff_max_s)
        self._make_source = make_source or (lambda camera: UrlSource(
            camera.url, open_timeout_s=config.open_timeout_s, read_timeout_s=config.stall_timeout_s,
            decode_threads=config.decode_threads))
        self._on_camera = on_camera
        # Cameras are checked now, before anything starts: a mistake is exit 2.
        self._flag_cameras = [parse_flag(text, defaults, environ) for text in config.camera]
        self._file = CamerasFile(config.cameras, defaults, environ) if config.cameras else None
        self._initial = self._flag_cameras + (self._file.read() if self._file else [])
        check_unique(self._initial)
        self.readers: dict[str, CameraReader] = {}
        self.publisher: Publisher | None = None
        self._wake = threading.Event()
        self._stopping = False
        self._reload_requested = False
        self._reasons = error_reasons()

    # ---- signals ------------------------------------------------------------------------------

    def stop(self, *_: object) -> None:
        self._stopping = True
        self._wake.set()

    def request_reload(self, *_: object) -> None:
        self._reload_requested = True
        self._wake.set()

    # ---- the loop -----------------------------------------------------------------------------

    def run(self, publisher: Publisher) -> ExitCode:
        self.publisher = publisher
        health = Health(lambda: publisher.broker_connected, self.statuses)
        server = None
        if self.config.metrics_port:
            try:
                server = serve_http(self.config.metrics_port, health)
            except OSError as exc:
                raise BadInput(f"cannot serve metrics on port {self.config.metrics_port}: {exc.strerror or exc}") \
                    from None
        for camera in self._initial:
            self._start(camera)
        log.info("ingesting %d camera(s) into %s on %s", len(self.readers), self.config.topic,
                 self.config.bootstrap_servers)
        now = time.monotonic()
        next_reload = now + self.config.reload_interval_s if self.config.reload_interval_s else float("inf")
        next_report = now + self.config.report_interval if self.config.report_interval else float("inf")
        last_report = self._counts()
        stopped_cleanly = False
        try:
            while not self._stopping:
                self._wake.wait(TICK_S)
                self._wake.clear()
                self._publish()
                publisher.poll(0)
                now = time.monotonic()
                health.turned(now)
                for reader in self.readers.values():
                    reader.watchdog(now)
                if self._reload_requested or now >= next_reload:
                    self._reload(requested=self._reload_requested)
                    self._reload_requested = False
                    next_reload = now + self.config.reload_interval_s if self.config.reload_interval_s else next_reload
                if now >= next_report:
                    last_report = self._report(last_report, now - (next_report - self.config.report_interval))
                    next_report = now + self.config.report_interval
            stopped_cleanly = True
        finally:
            # After an error (the broker refused our credentials) there is nothing to flush to.
            self._shutdown(publisher, flush=stopped_cleanly)
            if server is not None:
                server.shutdown()
        return ExitCode.OK

    def _publish(self) -> None:
        for name, reader in self.readers.items():
            if self.publisher.idle(name) and (frame := reader.slot.take()) is not None:
                self.publisher.send(name, frame)

    def _shutdown(self, publisher: Publisher, flush: bool) -> None:
        """Stop the readers, hand the broker the frames held, wait for it (bounded)."""
        for reader in self.readers.values():
            reader.stop()
        if flush:
            self._publish()
            remaining = publisher.flush(self.config.shutdown_timeout_s)
            if remaining:
                log.warning("%d frame(s) still undelivered after %g s: not published", remaining,
                            self.config.shutdown_timeout_s)
        for reader in self.readers.values():
            reader.join(1.0)

    # ---- the fleet ----------------------------------------------------------------------------

    def _start(self, camera: Camera) -> None:
        self._on_camera(camera)
        reader = CameraReader(camera, self.settings, self._make_source, self._wake)
        self.readers[camera.name] = reader
        self.publisher.add(camera.name)
        reader.start()

    def _stop(self, name: str, forget: bool) -> None:
        reader = self.readers.pop(name)
        reader.stop()
        if forget:
            self.publisher.remove(name)
            metrics.forget(name, self._reasons)
            log.info("camera %s: removed", name)

    def _reload(self, requested: bool) -> None:
        if self._file is None:
            if requested:
                log.info("SIGHUP: no --cameras file to re-read (cameras from --camera flags only)")
            return
        if not (requested or self._file.changed()):
            return
        try:
            wanted = self._flag_cameras + self._file.read()
            check_unique(wanted)
        except CamerasError as exc:
            metrics.reloads.labels("rejected").inc()
            log.error("cameras file not applied, the %d running camera(s) go on unchanged: %s", len(self.readers), exc)
            return
        changes = plan({name: reader.camera for name, reader in self.readers.items()}, wanted)
        if not changes:
            return
        for name in changes.stop:
            self._stop(name, forget=True)
        for camera in changes.restart:
            log.info("camera %s: changed, restarting", camera.name)
            self._stop(camera.name, forget=False)
            self._start(camera)
        for camera in changes.start:
            self._start(camera)
        metrics.reloads.labels("applied").inc()
        log.info("cameras file applied: %d started, %d stopped, %d restarted; %d running", len(changes.start),
                 len(changes.stop), len(changes.restart), len(self.readers))

    # ---- what it says about itself ------------------------------------------------------------

    def statuses(self) -> list[dict]:
        statuses = []
        for reader in list(self.readers.values()):
            status = reader.status()
            for outcome in (metrics.PUBLISHED, metrics.SKIPPED, metrics.FAILED):
                status[outcome] = int(_sample(metrics.FRAMES, camera=reader.camera.name, outcome=outcome))
            status["reconnects"] = int(_sample(metrics.RECONNECTS, camera=reader.camera.name))
            statuses.append(status)
        return statuses

    def _counts(self) -> dict[str, tuple[float, float]]:
        return {name: (_sample(metrics.FRAMES_READ, camera=name),
                       _sample(metrics.FRAMES, camera=name, outcome=metrics.PUBLISHED)) for name in self.readers}

    def _report(self, before: dict[str, tuple[float, float]], seconds: float) -> dict[str, tuple[float, float]]:
        """Log one block: each camera's state, fps in and out since the last block, and troubles."""
        after = self._counts()
        statuses = self.statuses()
        states = [s["state"] for s in statuses]
        lines = [f"{len(statuses)} camera(s): " + ", ".join(
            f"{states.count(state.value)} {state.value}" for state in SourceState if state.value in states)
            + f"; broker {'connected' if self.publisher.broker_connected else 'NOT connected'}",
            f"  {'camera':<20} {'state':<13} {'fps in':>7} {'fps out':>7} {'skipped':>8} {'failed':>7} "
            f"{'reconnects':>10}  last error"]
        for status in statuses:
            name = status["name"]
            read_0, out_0 = before.get(name, (0.0, 0.0))
            read_1, out_1 = after.get(name, (0.0, 0.0))
            error = status["last_error"] or "-"
            if "retry_in_s" in status:
                error += f" (retry in {status['retry_in_s']:.1f} s)"
            lines.append(f"  {name:<20} {status['state']:<13} {(read_1 - read_0) / seconds:>7.1f} "
                         f"{(out_1 - out_0) / seconds:>7.1f} {status['skipped']:>8} {status['failed']:>7} "
                         f"{status['reconnects']:>10}  {error}")
        log.info("status\n%s", "\n".join(lines))
        return after


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def ingest(config: IngestConfig) -> ExitCode:
    """Run until SIGTERM/SIGINT. Bad cameras or flags: CamerasError (exit 2) before anything starts."""
    debug = log.isEnabledFor(logging.DEBUG)
    configure_ffmpeg(config.rtsp_transport, native_logs=debug)
    with ExitStack() as stack:
        redactor = stack.enter_context(NativeOutputRedactor())
        supervisor = Supervisor(config, on_camera=lambda camera: redactor.add(camera.url))
        signal.signal(signal.SIGTERM, supervisor.stop)
        signal.signal(signal.SIGINT, supervisor.stop)
        signal.signal(signal.SIGHUP, supervisor.request_reload)
        return supervisor.run(Publisher(config))
