"""Readers and the supervisor in-process, with scripted cameras and a fake publisher: reconnects,
backoff, the stall watchdog with a read that blocks, frozen pictures, latest-frame hand-over, reloads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from prometheus_client import REGISTRY

from rtvi.streaming.ingest import metrics
from rtvi.streaming.ingest.cameras import Camera
from rtvi.streaming.ingest.config import IngestConfig
from rtvi.streaming.ingest.reader import CameraReader, Frame, ReaderSettings
from rtvi.streaming.ingest.supervisor import Supervisor
from rtvi.streaming.producer.sources.base import SourceState, SourceUnreachable

FAST = ReaderSettings(stall_timeout_s=0.3, frozen_timeout_s=0.3, open_timeout_s=0.3, backoff_initial_s=0.05,
                      backoff_max_s=0.4)


class FakeSource:
    """A camera that does what its script says: ``ok`` (a new picture every 10 ms), ``refuse`` (open
    fails), ``block`` (three frames, then a read that blocks until ``release``), ``frozen`` (the same
    picture), ``end`` (three frames, then the end of the stream), ``crash`` (a read raises what no
    source should: an OpenCV surprise)."""

    description = "fake camera"
    live = True

    def __init__(self, behaviour: str, release: threading.Event) -> None:
        self.behaviour, self.release, self.frames, self.closed = behaviour, release, 0, False

    def open(self) -> None:
        if self.behaviour == "refuse":
            raise SourceUnreachable("fake camera: connection refused")

    def grab(self) -> bool:
        if self.behaviour == "crash":
            raise RuntimeError("OpenCV(4.14.0) error in rtsp://u:pw@h/x")
        if self.behaviour in ("block", "end") and self.frames >= 3:
            if self.behaviour == "end":
                return False
            self.release.wait(10)
        time.sleep(0.01)
        self.frames += 1
        return True

    def retrieve(self) -> np.ndarray:
        value = 7 if self.behaviour == "frozen" else self.frames % 256
        return np.full((24, 32, 3), value, np.uint8)

    def close(self) -> None:
        self.closed = True


class Script:
    """Hands out sources in the order of ``behaviours`` (the last one repeats)."""

    def __init__(self, *behaviours: str) -> None:
        self.behaviours = list(behaviours)
        self.release = threading.Event()
        self.opened: list[FakeSource] = []

    def __call__(self, camera: Camera) -> FakeSource:
        behaviour = self.behaviours.pop(0) if len(self.behaviours) > 1 else self.behaviours[0]
        self.opened.append(FakeSource(behaviour, self.release))
        return self.opened[-1]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def wait_until(predicate: Callable[[], object], timeout: float, tick: Callable[[], None] = lambda: None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tick()
        if result := predicate():
            return result
        time.sleep(0.01)
    raise AssertionError("timed out")


@pytest.fixture
def reader_for(request):
    readers = []

    def make(script: Script, settings: ReaderSettings = FAST) -> CameraReader:
        reader = CameraReader(Camera(request.node.name[:60], "rtsp://u:pw@h/x", fps=50), settings, script,
                              threading.Event())
        readers.append((reader, script))
        reader.start()
        return reader

    yield make
    for reader, script in readers:
        reader.stop()
        script.release.set()
        reader.join(5)


def test_a_camera_that_never_connects_is_retried_with_growing_delays(reader_for):
    reader = reader_for(Script("refuse"))
    delays = []

    def record() -> bool:
        status = reader.status()
        if status.get("retry_delay_s") and (not delays or delays[-1] != status["retry_delay_s"]):
            delays.append(status["retry_delay_s"])
        return len(delays) >= 5

    wait_until(record, 5)
    assert all(b > a for a, b in zip(delays, delays[1:4])), delays  # 0.05, 0.1, 0.2, 0.4 (+-20%)
    assert max(delays) <= FAST.backoff_max_s
    name = reader.camera.name
    assert sample(metrics.ERRORS, camera=name, reason="unreachable") >= 5
    assert sample(metrics.RECONNECTS, camera=name) >= 5 and sample(metrics.CAMERA_UP, camera=name) == 0
    assert reader.status()["last_error_reason"] == "unreachable"


def test_a_stream_that_ends_is_reconnected_and_frames_flow_again(reader_for):
    script = Script("end", "ok")
    reader = reader_for(script)
    wait_until(lambda: len(script.opened) == 2 and reader.lifecycle.state == SourceState.STREAMING, 5)
    assert reader.status()["last_error_reason"] == "ended" and script.opened[0].closed
    assert sample(metrics.RECONNECTS, camera=reader.camera.name) == 1
    assert sample(metrics.CAMERA_UP, camera=reader.camera.name) == 1
    assert wait_until(reader.slot.take, 2)


def test_an_unexpected_error_is_a_failure_like_any_other(reader_for):
    script = Script("crash", "ok")
    reader = reader_for(script)
    wait_until(lambda: len(script.opened) == 2 and reader.lifecycle.state == SourceState.STREAMING, 5)
    assert sample(metrics.ERRORS, camera=reader.camera.name, reason="failed") == 1
    assert "RuntimeError: OpenCV(4.14.0) error in rtsp://u:***@h/x" in reader.status()["last_error"]


def test_a_read_that_blocks_is_abandoned_by_the_watchdog_and_the_camera_reconnects(reader_for):
    script = Script("block", "ok")
    reader = reader_for(script)
    tick = lambda: reader.watchdog(time.monotonic())  # noqa: E731 (the supervisor's loop does this)
    wait_until(lambda: reader.lifecycle.state == SourceState.RECONNECTING, 3, tick)
    assert reader.status()["last_error_reason"] == "stalled"
    wait_until(lambda: reader.lifecycle.state == SourceState.STREAMING and len(script.opened) == 2, 3, tick)
    blocked = script.opened[0]
    assert not blocked.closed  # still inside its read
    script.release.set()
    wait_until(lambda: blocked.closed, 3)
    time.sleep(0.1)
    assert reader.lifecycle.state == SourceState.STREAMING, "the abandoned worker must not touch the camera"
    assert sample(metrics.ERRORS, camera=reader.camera.name, reason="stalled") == 1


def test_blocked_reads_never_pile_up_threads(reader_for):
    reader = reader_for(Script("block"))
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        reader.watchdog(time.monotonic())
        assert sum(t.is_alive() for t in reader._threads) <= 2
        time.sleep(0.02)
    assert sample(metrics.ERRORS, camera=reader.camera.name, reason="stalled") >= 1


def test_a_frozen_picture_is_reconnected(reader_for):
    reader = reader_for(Script("frozen"))
    wait_until(lambda: sample(metrics.ERRORS, camera=reader.camera.name, reason="frozen") >= 1, 3)
    assert "the same picture for 0.3 s" in reader.status()["last_error"]


def test_stop_ends_the_reader(reader_for):
    reader = reader_for(Script("ok"))
    wait_until(lambda: reader.lifecycle.state == SourceState.STREAMING, 3)
    reader.stop()
    reader.join(2)
    assert reader.lifecycle.state == SourceState.STOPPED and not any(t.is_alive() for t in reader._threads)
    assert sample(metrics.CAMERA_UP, camera=reader.camera.name) == 0


class FakePublisher:
    """Takes frames when ``open`` is set; records what it sent."""

    def __init__(self) -> None:
        self.broker_connected = True
        self.open = threading.Event()
        self.sent: list[tuple[str, Frame, float]] = []
        self.cameras: set[str] = set()

    def add(self, camera: str) -> None:
        self.cameras.add(camera)

    def remove(self, camera: str) -> None:
        self.cameras.discard(camera)

    def idle(self, camera: str) -> bool:
        return self.open.is_set()

    def send(self, camera: str, frame: Frame) -> None:
        self.sent.append((camera, frame, time.time_ns()))

    def poll(self, timeout: float = 0) -> None:
        pass

    def flush(self, timeout: float) -> int:
        return 0


@pytest.fixture
def fleet(tmp_path):
    runs = []

    def start(cameras_yaml: str, **overrides) -> tuple[Supervisor, FakePublisher, Script]:
        path = tmp_path / "cams.yaml"
        path.write_text(cameras_yaml)
        config = IngestConfig(cameras=str(path), metrics_port=0, report_interval=0, fps=50,
                              reload_interval_s=overrides.pop("reload_interval_s", 0.05),
                              stall_timeout_s=0.3, backoff_initial_s=0.05, backoff_max_s=0.2, **overrides)
        script = Script("ok")
        supervisor, publisher = Supervisor(config, make_source=script), FakePublisher()
        thread = threading.Thread(target=supervisor.run, args=(publisher,), daemon=True)
        thread.start()
        runs.append((supervisor, thread, script))
        return supervisor, publisher, script

    yield start
    for supervisor, thread, script in runs:
        supervisor.stop()
        script.release.set()
        thread.join(5)
        assert not thread.is_alive()


def test_a_busy_publisher_gets_the_newest_frame_and_older_ones_are_skipped(fleet):
    supervisor, publisher, _ = fleet("- {name: lat-a, url: 'rtsp://h/a'}\n")
    time.sleep(0.5)  # the broker is slow: nothing can be sent, frames replace each other
    assert sample(metrics.FRAMES, camera="lat-a", outcome="skipped") >= 10
    publisher.open.set()
    camera, frame, sent_ns = wait_until(lambda: publisher.sent and publisher.sent[0], 2)
    assert camera == "lat-a" and (sent_ns - frame.capture_ns) / 1e9 < 0.1, "the frame sent is the latest one"


def test_the_cameras_file_is_reapplied_without_touching_unchanged_cameras(fleet, tmp_path):
    supervisor, publisher, _ = fleet("- {name: rel-a, url: 'rtsp://h/a'}\n- {name: rel-b, url: 'rtsp://h/b'}\n")
    wait_until(lambda: set(supervisor.readers) == {"rel-a", "rel-b"}, 2)
    first_a = supervisor.readers["rel-a"]
    wait_until(lambda: sample(metrics.FRAMES_READ, camera="rel-b") > 0, 2)
    (tmp_path / "cams.yaml").write_text("- {name: rel-a, url: 'rtsp://h/a'}\n- {name: rel-c, url: 'rtsp://h/c', fps: 2}\n")
    wait_until(lambda: set(supervisor.readers) == {"rel-a", "rel-c"}, 2)
    assert supervisor.readers["rel-a"] is first_a and first_a.lifecycle.state == SourceState.STREAMING
    assert REGISTRY.get_sample_value(metrics.FRAMES_READ, {"camera": "rel-b"}) is None, "its series went with it"
    assert publisher.cameras == {"rel-a", "rel-c"}
    (tmp_path / "cams.yaml").write_text("- {name: rel-a, url: 'rtsp://h/a', fps: 1}\n- {name: rel-c}\n")
    wait_until(lambda: sample(metrics.RELOADS, result="rejected") >= 1, 2)
    assert set(supervisor.readers) == {"rel-a", "rel-c"} and supervisor.readers["rel-a"] is first_a


def test_sighup_re_reads_the_file_when_polling_is_off(fleet, tmp_path):
    supervisor, _, _ = fleet("- {name: hup-a, url: 'rtsp://h/a'}\n", reload_interval_s=0)
    (tmp_path / "cams.yaml").write_text("- {name: hup-a, url: 'rtsp://h/a', fps: 3}\n")
    time.sleep(0.3)
    assert supervisor.readers["hup-a"].camera.fps == 50
    supervisor.request_reload()
    wait_until(lambda: supervisor.readers["hup-a"].camera.fps == 3, 2)  # changed: restarted
