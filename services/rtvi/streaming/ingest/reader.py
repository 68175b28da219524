"""One camera, read on a thread of its own, for as long as it is configured.

A reader connects, then grabs every frame the camera sends (so the stream never backs up
in the socket or FFmpeg's buffers) and converts, encodes and hands over only those due at
the camera's publishing rate: at 5 of 25 fps, four frames in five cost a grab and nothing
more. A frame handed over goes into :class:`LatestFrame`, a slot of one: if the publisher
has not taken the previous frame yet (a slow or absent broker), the newer one replaces it,
counted as skipped. Nothing queues, so what is published is at most one frame interval
plus publishing time old.

When the stream fails (an error, its end, a picture that stopped changing) the reader
waits a capped, jittered, doubling delay (``policy.Backoff``) and connects again, for ever.
A read can also block past every timeout inside FFmpeg; then the supervisor's watchdog
(:meth:`CameraReader.watchdog`) declares the camera stalled and starts a fresh worker
thread. The blocked one is abandoned, not killed (no thread can be): a generation number
tells it, when its read returns at last, that it no longer owns the camera, and it only
closes its capture and exits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from rtvi.streaming.ingest import metrics
from rtvi.streaming.ingest.cameras import Camera
from rtvi.streaming.ingest.policy import Backoff, FreezeDetector, Pacer
from rtvi.streaming.producer.sources.base import (
    FrameSource, Lifecycle, SourceEnded, SourceError, SourceFrozen, SourceStalled, SourceState,
)
from rtvi.streaming.producer.sources.redact import redact

log = logging.getLogger("rtvi.ingest")

# At most this many threads per camera: the current worker and one abandoned in a blocked read.
MAX_THREADS = 2


@dataclass(frozen=True)
class Frame:
    """A frame ready to publish: the JPEG and what its headers say."""

    data: bytes
    capture_ns: int
    width: int
    height: int


class LatestFrame:
    """The hand-over between a camera's reader and the publisher: at most one frame, the newest."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: Frame | None = None

    def put(self, frame: Frame) -> bool:
        """Hold ``frame``; True if it replaced one nobody took (that one is skipped)."""
        with self._lock:
            replaced, self._frame = self._frame is not None, frame
        return replaced

    def take(self) -> Frame | None:
        with self._lock:
            frame, self._frame = self._frame, None
        return frame


@dataclass(frozen=True)
class ReaderSettings:
    jpeg_quality: int = 85
    max_frame_bytes: int = 4 * 1024 * 1024
    stall_timeout_s: float = 10.0
    frozen_timeout_s: float = 20.0
    open_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0


def encode(image: np.ndarray, camera: Camera, quality: int, capture_ns: int) -> Frame:
    """Crop to the camera's region of interest, resize, JPEG-encode."""
    if camera.roi:
        x, y, w, h = camera.roi
        region = image[y:y + h, x:x + w]
        if not region.size:
            raise SourceError(f"camera {camera.name!r}: roi {list(camera.roi)} lies outside its "
                              f"{image.shape[1]}x{image.shape[0]} frames")
        image = region
    if camera.resize:
        image = cv2.resize(image, camera.resize, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise SourceError(f"camera {camera.name!r}: JPEG encoding failed")
    return Frame(data.tobytes(), capture_ns, image.shape[1], image.shape[0])


class CameraReader:
    """Reads one camera until stopped. The supervisor asks it for frames (``slot``), runs
    its watchdog and reads its ``status``; everything else happens on its own thread."""

    def __init__(self, camera: Camera, settings: ReaderSettings, make_source: Callable[[Camera], FrameSource],
                 wake: threading.Event, clock: Callable[[], float] = time.monotonic) -> None:
        self.camera = camera
        self.settings = settings
        self.slot = LatestFrame()
        self.lifecycle = Lifecycle()
        self.backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        self.last_error: SourceError | None = None
        self.last_frame_at: float | None = None
        self.retry_at: float | None = None
        self.retry_delay = 0.0
        self.deadline: float | None = None  # by when the blocking call in progress must return
        self._make_source = make_source
        self._wake = wake
        self._clock = clock
        self._generation = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        name = camera.name
        self._up = metrics.camera_up.labels(name)
        self._read = metrics.frames_read.labels(name)
        metrics.frames.labels(name, metrics.PUBLISHED)  # every outcome has a series from the start
        self._skipped = metrics.frames.labels(name, metrics.SKIPPED)
        self._failed = metrics.frames.labels(name, metrics.FAILED)
        self._reconnects = metrics.reconnects.labels(name)
        self._up.set(0)
        metrics.last_frame_age.labels(name).set_function(self._last_frame_age)

    # ---- the supervisor's side --------------------------------------------------------------

    def start(self) -> None:
        log.info("camera %s: connecting to %s", self.camera.name, self.camera.shown_url)
        self._spawn(self._generation)

    def stop(self) -> None:
        """Stop reading; a worker blocked in a read finds out when the read returns."""
        self._stopped.set()
        with self._lock:
            self._generation += 1
            self.lifecycle.to(SourceState.STOPPED)
            self.deadline = None
        self._up.set(0)

    def join(self, timeout: float) -> None:
        deadline = self._clock() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - self._clock()))

    def watchdog(self, now: float) -> None:
        """Called often by the supervisor: a blocking call past its deadline is a stalled camera."""
        with self._lock:
            if self.deadline is None or now < self.deadline or self._stopped.is_set():
                return
            self._threads = [t for t in self._threads if t.is_alive()]
            if len(self._threads) >= MAX_THREADS:
                return  # one worker is already abandoned and still blocked: do not pile up threads
            stuck = self.lifecycle.state
            self._generation += 1
            what = "no frame" if stuck == SourceState.STREAMING else "no connection"
            self._fail(SourceStalled(f"{self.camera.shown_url}: {what} for {self.settings.stall_timeout_s:g} s "
                                     "(a read blocked)"))
            generation = self._generation
        self._spawn(generation)

    def status(self) -> dict[str, Any]:
        """What /readyz and the log's status block show (no credentials)."""
        now = self._clock()
        status: dict[str, Any] = {
            "name": self.camera.name, "state": self.lifecycle.state.value, "url": self.camera.shown_url,
            "since_s": round(now - self.lifecycle.since, 1),
            "last_frame_age_s": None if self.last_frame_at is None else round(now - self.last_frame_at, 2),
            "last_error": None if self.last_error is None else str(self.last_error),
            "last_error_reason": None if self.last_error is None else self.last_error.reason,
        }
        if self.lifecycle.state == SourceState.RECONNECTING and self.retry_at is not None:
            status["retry_delay_s"] = round(self.retry_delay, 2)
            status["retry_in_s"] = round(max(0.0, self.retry_at - now), 2)
        return status

    def _last_frame_age(self) -> float:
        return float("inf") if self.last_frame_at is None else self._clock() - self.last_frame_at

    def _spawn(self, generation: int) -> None:
        thread = threading.Thread(target=self._run, args=(generation,), name=f"camera-{self.camera.name}",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    # ---- the worker thread ------------------------------------------------------------------

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._stopped.is_set()

    def _run(self, generation: int) -> None:
        while self._current(generation):
            if self.lifecycle.state == SourceState.RECONNECTING:
                if self._stopped.wait(max(0.0, self.retry_at - self._clock())):
                    return
                with self._lock:
                    if not self._current(generation):
                        return
                    self.lifecycle.to(SourceState.CONNECTING)
            source = self._make_source(self.camera)
            try:
                # FFmpeg's open timeout, then the probe that explains a failure (as long again).
                self._watch(generation, 2 * self.settings.open_timeout_s + self.settings.stall_timeout_s)
                source.open()
                self._stream(source, generation)
            except SourceError as error:
                self._fail_if_current(generation, error)
            except Exception as exc:  # noqa: BLE001 (an OpenCV or FFmpeg surprise must not end the camera)
                log.debug("camera %s: unexpected error", self.camera.name, exc_info=True)
                self._fail_if_current(generation, SourceError(
                    f"{self.camera.shown_url}: {type(exc).__name__}: {redact(str(exc))}"))
            finally:
                source.close()

    def _fail_if_current(self, generation: int, error: SourceError) -> None:
        with self._lock:
            if self._current(generation):
                self._fail(error)

    def _watch(self, generation: int, seconds: float | None) -> None:
        with self._lock:
            if self._current(generation):
                self.deadline = None if seconds is None else self._clock() + seconds

    def _stream(self, source: FrameSource, generation: int) -> None:
        settings, camera = self.settings, self.camera
        pacer, freeze = Pacer(camera.fps), FreezeDetector(settings.frozen_timeout_s)
        while self._current(generation):
            self._watch(generation, settings.stall_timeout_s)
            cpu, started = time.thread_time(), self._clock()
            grabbed = source.grab()
            if self._clock() - started >= settings.stall_timeout_s * 0.95:
                # Past FFmpeg's read timeout: even a frame returned now is one it had buffered.
                raise SourceStalled(f"{camera.shown_url}: no frame for {settings.stall_timeout_s:g} s")
            if not grabbed:
                raise SourceEnded(f"{camera.shown_url}: the camera ended the stream")
            capture_ns, now = time.time_ns(), self._clock()
            if not self._current(generation):
                return
            self._read.inc()
            self.last_frame_at = now
            if self.lifecycle.state == SourceState.CONNECTING:
                self._streaming(generation)
            if not pacer.due(now):
                metrics.decode_seconds.observe(time.thread_time() - cpu)
                continue
            image = source.retrieve()
            metrics.decode_seconds.observe(time.thread_time() - cpu)
            if freeze.frozen(image, now):
                raise SourceFrozen(f"{camera.shown_url}: the same picture for {settings.frozen_timeout_s:g} s")
            try:
                frame = encode(image, camera, settings.jpeg_quality, capture_ns)
            except SourceError as error:
                self._failed.inc()
                self._note(error)
                continue
            if len(frame.data) > settings.max_frame_bytes:
                self._failed.inc()
                self._note(SourceError(f"camera {camera.name!r}: a {len(frame.data)}-byte frame is over "
                                       f"--max-frame-bytes {settings.max_frame_bytes}; set resize or a lower "
                                       "--jpeg-quality"))
                continue
            if self._current(generation):
                if self.slot.put(frame):
                    self._skipped.inc()
                self._wake.set()

    def _streaming(self, generation: int) -> None:
        with self._lock:
            if not self._current(generation):
                return
            self.lifecycle.to(SourceState.STREAMING)
            self.backoff.reset()
            self.retry_at = None
        self._up.set(1)
        log.info("camera %s: streaming from %s", self.camera.name, self.camera.shown_url)

    def _fail(self, error: SourceError) -> None:
        """The connection is lost or never came: count it and schedule the next try (under the lock)."""
        was = self.lifecycle.state
        self.lifecycle.to(SourceState.RECONNECTING)
        self.deadline = None
        self.retry_delay = self.backoff.next()
        self.retry_at = self._clock() + self.retry_delay
        self._up.set(0)
        self._reconnects.inc()
        metrics.errors.labels(self.camera.name, error.reason).inc()
        repeated = self.last_error is not None and str(self.last_error) == str(error)
        self.last_error = error
        log.log(logging.DEBUG if repeated else logging.WARNING, "camera %s: %s%s: %s; retrying in %.1f s",
                self.camera.name, error.reason, " (was streaming)" if was == SourceState.STREAMING else "",
                error, self.retry_delay)

    def _note(self, error: SourceError) -> None:
        """A frame failed but the stream goes on: say so once per distinct error."""
        if self.last_error is None or str(self.last_error) != str(error):
            log.warning("camera %s: %s", self.camera.name, error)
        self.last_error = error
