"""`rtvi ingest` against real parts: the tests' RTSP camera on loopback (live, paced at 25 fps,
looping; stopped, paused and restarted by the tests), a real Apache Kafka broker (direct, and
behind the TCP proxy for a slowed or cut network), and the service as a subprocess, as a pod
runs it. The tests read what users read: the topic (with the broker's own append times),
/metrics and /readyz; never the log, except to prove that no credential is in it.
"""

from __future__ import annotations

import json
import statistics
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import Proc, free_port, kafka_broker, metric_sum, rtvi_command
from rtvi.streaming.frames import FrameInfo
from support.rtsp_server import Clip, RtspServer
from test_streaming_pipeline import wait_for

PASSWORD = "Hunter2-camera-pass"
WRONG = "not-the-Password-77"
SIZE = (320, 240)


@pytest.fixture(scope="module")
def clips() -> dict[str, Clip]:
    moving = Clip.make(*SIZE, fps=25, seconds=4)
    # A hung encoder resending its last frame: one frame, looped.
    return {"a": moving, "b": moving, "still": Clip.make(*SIZE, fps=25, seconds=1 / 25, moving=False)}


@pytest.fixture
def camera(clips):
    """A camera server of the test's own (tests stop and restart it)."""
    with RtspServer(clips) as server:
        yield server


@pytest.fixture(scope="module")
def proxied_kafka(tmp_path_factory):
    """A broker whose second listener advertises the TCP proxy's port, so a client bootstrapped
    through the proxy stays behind it (Kafka clients follow advertised addresses)."""
    from support.kafka_broker import Listener
    from support.tcp_proxy import TcpProxy

    proxy_port = free_port()
    broker = kafka_broker(tmp_path_factory.mktemp("kafka-ingest"),
                          listeners=(Listener("PROXIED", advertised_port=proxy_port),))
    with broker, TcpProxy(broker.listener("PROXIED").port, port=proxy_port) as proxy:
        broker.proxy = proxy
        yield broker


def frames_topic(broker, request) -> str:
    """A fresh topic whose records carry the broker's append time (LogAppendTime): a frame's age
    on arrival is then measured by the broker's clock, not the sender's."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = "ingest-" + request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:60]
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers, "log_level": 0})
    future = admin.create_topics([NewTopic(name, 2, 1, config={"message.timestamp.type": "LogAppendTime"})])[name]
    future.result(30)
    return name


@dataclass(frozen=True)
class Record:
    key: str
    info: FrameInfo
    appended_ns: int

    @property
    def age_s(self) -> float:
        """Capture to the broker's append."""
        return (self.appended_ns - self.info.capture_ns) / 1e9


def read_frames(broker, topic: str, idle_s: float = 2.0, timeout: float = 60) -> list[Record]:
    """Every record of ``topic`` from the beginning, read until none came for ``idle_s``."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    reader = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "rtvi-ingest-test",
                       "enable.auto.commit": False})
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in (0, 1)])
    records, last, deadline = [], time.monotonic(), time.monotonic() + timeout
    try:
        while time.monotonic() - last < idle_s and time.monotonic() < deadline:
            for msg in reader.consume(num_messages=500, timeout=0.2):
                if msg.error() is None:
                    info = FrameInfo.from_record(msg.headers(), msg.key())
                    records.append(Record(msg.key().decode(), info, msg.timestamp()[1] * 1_000_000))
                    last = time.monotonic()
    finally:
        reader.close()
    return sorted(records, key=lambda r: r.info.capture_ns)


def rate(records: list[Record], skip_s: float = 1.0) -> float:
    """Frames per second by capture time, after the first ``skip_s`` (connecting)."""
    start = records[0].info.capture_ns + skip_s * 1e9
    steady = [r.info.capture_ns for r in records if r.info.capture_ns >= start]
    return (len(steady) - 1) / ((steady[-1] - steady[0]) / 1e9)


class Ingest:
    """`rtvi ingest` as a process, with its metrics and health endpoints."""

    def __init__(self, tmp_path: Path, bootstrap: str, topic: str, *args: str, env: dict | None = None,
                 log_level: str = "info") -> None:
        self.port = free_port()
        self.bodies: list[str] = []  # every /metrics and /readyz body read, for the credentials check
        self.proc = Proc(rtvi_command("--log-level", log_level, "ingest", "--bootstrap-servers", bootstrap, "--topic", topic,
                                      "--metrics-port", str(self.port), "--report-interval", "2", *args),
                         tmp_path / f"ingest-{self.port}.log", env=env)

    def _get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                status, body = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read().decode()
        except OSError:
            return 0, ""
        self.bodies.append(body)
        return status, body

    def sample(self, name: str, **labels: str) -> float:
        return metric_sum(self._get("/metrics")[1], name, **labels)

    def series(self) -> str:
        return self._get("/metrics")[1]

    def readyz(self) -> tuple[int, dict]:
        status, body = self._get("/readyz")
        return status, json.loads(body) if body else {}

    def camera(self, name: str) -> dict | None:
        return next((c for c in self.readyz()[1].get("cameras", []) if c["name"] == name), None)

    def wait(self, predicate, timeout: float, what: str):
        def alive_and() -> object:
            assert self.proc.popen.poll() is None, f"rtvi ingest exited:\n{self.proc.output[-3000:]}"
            return predicate()

        return wait_for(alive_and, timeout, what, self.proc, interval=0.1)

    def streaming(self, name: str) -> bool:
        return (self.camera(name) or {}).get("state") == "streaming"

    def stop(self) -> int:
        """SIGTERM, as Kubernetes stops a pod: exit 0 once what it holds is flushed."""
        return self.proc.terminate(timeout=30)


@pytest.fixture
def run_ingest(tmp_path):
    started: list[Ingest] = []

    def start(*args, **kwargs) -> Ingest:
        started.append(Ingest(tmp_path, *args, **kwargs))
        return started[-1]

    yield start
    for ingest in started:
        ingest.proc.kill()


def cameras_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cameras.yaml"
    path.write_text(text)
    return path


def test_two_cameras_publish_at_their_target_rates_keyed_by_name(tmp_path, broker, camera, run_ingest, request):
    topic = frames_topic(broker, request)
    cams = cameras_file(tmp_path, f"""
- name: gate
  url: rtsp://127.0.0.1:{camera.port}/a
  fps: 5
  roi: [0, 0, 160, 120]
- name: dock
  url: rtsp://127.0.0.1:{camera.port}/b
  fps: 12
  resize: 200x150
""")
    ingest = run_ingest(broker.bootstrap_servers, topic, "--cameras", str(cams))
    ingest.wait(lambda: ingest.streaming("gate") and ingest.streaming("dock"), 30, "both cameras streaming")
    time.sleep(8)
    assert ingest.stop() == 0, ingest.proc.output[-3000:]
    records = read_frames(broker, topic)
    for name, fps, size in (("gate", 5, (160, 120)), ("dock", 12, (200, 150))):
        mine = [r for r in records if r.key == name]
        assert all(r.info.stream == name and (r.info.width, r.info.height) == size for r in mine)
        assert sorted(r.info.frame for r in mine) == list(range(len(mine))), "every frame sent was delivered"
        measured = rate(mine)
        ages = [r.age_s for r in mine]
        print(f"\n{name}: {len(mine)} frames, {measured:.2f} fps (target {fps}), capture to broker "
              f"median {statistics.median(ages) * 1000:.0f} ms, max {max(ages) * 1000:.0f} ms")
        assert abs(measured - fps) / fps <= 0.10, (name, measured)
        assert statistics.median(ages) < 0.3 and max(ages) < 1.5, ages


def test_a_camera_outage_and_a_stalled_camera_are_survived(tmp_path, broker, camera, run_ingest, request):
    topic = frames_topic(broker, request)
    ingest = run_ingest(broker.bootstrap_servers, topic, "--camera", f"cam=rtsp://127.0.0.1:{camera.port}/a",
                        "--backoff-max-s", "2", "--stall-timeout-s", "3")
    published = lambda: ingest.sample("rtvi_ingest_frames_total", camera="cam", outcome="published")  # noqa: E731
    up = lambda: ingest.sample("rtvi_ingest_camera_up", camera="cam")  # noqa: E731
    ingest.wait(lambda: published() > 0, 30, "first frames published")

    camera.stop()  # the camera is gone: its port closed, its session cut
    stopped = time.monotonic()
    ingest.wait(lambda: up() == 0, 5, "camera_up 0 once the camera is gone")
    time.sleep(max(0.0, stopped + 8 - time.monotonic()))
    assert ingest.sample("rtvi_ingest_errors_total", camera="cam", reason="unreachable") >= 1
    before = published()
    camera.start()
    back = time.monotonic()
    ingest.wait(lambda: up() == 1 and published() > before, 2 + 2, "frames within the backoff cap + 2 s")
    print(f"\nframes again {time.monotonic() - back:.1f} s after the camera came back")
    assert ingest.sample("rtvi_ingest_reconnects_total", camera="cam") >= 2

    camera.pause()  # connected but silent: the reader's next read blocks
    ingest.wait(lambda: up() == 0, 3 + 3, "camera_up 0 once no frame came for the stall timeout")
    assert ingest.sample("rtvi_ingest_errors_total", camera="cam", reason="stalled") >= 1
    camera.resume()
    before = published()
    ingest.wait(lambda: up() == 1 and published() > before, 2 + 3 + 3, "frames again after the stall")
    assert ingest.stop() == 0


def test_failing_cameras_never_slow_a_working_one(tmp_path, broker, camera, run_ingest, request):
    topic = frames_topic(broker, request)
    cams = cameras_file(tmp_path, f"""
- {{name: working, url: 'rtsp://127.0.0.1:{camera.port}/a', fps: 5}}
- {{name: gone, url: 'rtsp://viewer:{PASSWORD}@127.0.0.1:{free_port()}/cam'}}
- {{name: frozen, url: 'rtsp://127.0.0.1:{camera.port}/still'}}
""")
    ingest = run_ingest(broker.bootstrap_servers, topic, "--cameras", str(cams), "--backoff-initial-s", "0.25",
                        "--backoff-max-s", "4", "--frozen-timeout-s", "2")
    ingest.wait(lambda: ingest.streaming("working"), 30, "the working camera streaming")
    delays: list[float] = []
    deadline = time.monotonic() + 9
    while time.monotonic() < deadline:
        gone = ingest.camera("gone") or {}
        if gone.get("retry_delay_s") and (not delays or gone["retry_delay_s"] != delays[-1]):
            delays.append(gone["retry_delay_s"])
        time.sleep(0.1)
    status, ready = ingest.readyz()
    assert status == 200 and ready["broker"] == "connected", ready
    cameras = {c["name"]: c for c in ready["cameras"]}
    print("\n" + json.dumps(cameras["gone"]), f"\nretry delays seen: {delays}")
    assert cameras["working"]["state"] == "streaming" and cameras["working"]["reconnects"] == 0
    assert cameras["gone"]["state"] == "reconnecting" and cameras["gone"]["last_error_reason"] == "unreachable"
    assert len(delays) >= 4 and all(b > a * 1.3 for a, b in zip(delays, delays[1:4])), delays
    assert ingest.sample("rtvi_ingest_errors_total", camera="frozen", reason="frozen") >= 1
    assert ingest.stop() == 0
    working = [r for r in read_frames(broker, topic) if r.key == "working"]
    assert abs(rate(working) - 5) / 5 <= 0.10, rate(working)


def test_a_slowed_or_cut_broker_never_makes_published_frames_stale(tmp_path, proxied_kafka, camera, run_ingest,
                                                                  request):
    topic, proxy = frames_topic(proxied_kafka, request), proxied_kafka.proxy
    ingest = run_ingest(proxy.address, topic, "--camera", f"cam=rtsp://127.0.0.1:{camera.port}/a", "--fps", "10",
                        "--publish-timeout-s", "2")
    skipped = lambda: ingest.sample("rtvi_ingest_frames_total", camera="cam", outcome="skipped")  # noqa: E731
    ingest.wait(lambda: ingest.sample("rtvi_ingest_frames_total", camera="cam", outcome="published") >= 10, 30,
                "frames flowing through the proxy")
    try:
        proxy.latency_s = 0.4  # slowed: every chunk 0.4 s late each way, 0.8 s a round trip
        slowed = time.time_ns()
        time.sleep(6)
        proxy.latency_s = 0.0
        healed_slow = time.time_ns()
        assert skipped() > 0
        time.sleep(1)
        proxy.reset()  # cut: every connection reset, and new ones carry nothing
        proxy.blackhole = True
        time.sleep(5)
        proxy.clear()
        healed = time.time_ns()
    finally:
        proxy.clear()
    time.sleep(6)
    assert ingest.stop() == 0
    records = read_frames(proxied_kafka, topic)
    during_slow = [r for r in records if slowed + 2e9 <= r.appended_ns <= healed_slow]
    after_cut = [r for r in records if r.appended_ns >= healed]
    stale = [r for r in after_cut if r.info.capture_ns < healed]
    print(f"\nslowed: {len(during_slow)} frames, ages up to {max(r.age_s for r in during_slow):.2f} s; "
          f"after the cut: {len(after_cut)} frames, {len(stale)} captured before it ended")
    # At most one interval (0.1 s) in the slot, plus the way to the broker (0.4 s), plus this machine's slack.
    assert during_slow and max(r.age_s for r in during_slow) < 1.2, [r.age_s for r in during_slow]
    # No backlog of frames from the cut arrives after it: at most the one in flight when it began.
    assert len(stale) <= 1, [r.age_s for r in stale]
    fresh = [r for r in after_cut if r.appended_ns >= healed + 1e9]
    assert len(fresh) >= 10 and max(r.age_s for r in fresh) < 0.5, [r.age_s for r in fresh]


def test_cameras_added_and_removed_while_running_and_no_credential_ever_shown(tmp_path, broker, clips, run_ingest,
                                                                               request):
    topic = frames_topic(broker, request)
    entry = "- {{name: {name}, url: 'rtsp://viewer:${{{var}}}@127.0.0.1:{port}/{path}', fps: 5}}\n"
    with RtspServer(clips, credentials=("viewer", PASSWORD)) as camera:
        cams = cameras_file(tmp_path, entry.format(name="a", var="CAM_PASSWORD", port=camera.port, path="a"))
        # FFmpeg and OpenCV at their most talkative: the redaction must hold for their lines too.
        env = {"CAM_PASSWORD": PASSWORD, "WRONG_PASSWORD": WRONG, "OPENCV_FFMPEG_DEBUG": "1",
               "OPENCV_FFMPEG_LOGLEVEL": "40", "OPENCV_LOG_LEVEL": "DEBUG"}
        ingest = run_ingest(broker.bootstrap_servers, topic, "--cameras", str(cams), "--reload-interval-s", "0.5",
                            env=env, log_level="debug")
        ingest.wait(lambda: ingest.streaming("a"), 30, "camera a streaming")
        cams.write_text(entry.format(name="a", var="CAM_PASSWORD", port=camera.port, path="a")
                        + entry.format(name="b", var="CAM_PASSWORD", port=camera.port, path="b")
                        + entry.format(name="locked", var="WRONG_PASSWORD", port=camera.port, path="a"))
        ingest.wait(lambda: ingest.streaming("b") and (ingest.camera("locked") or {}).get("last_error_reason")
                    == "auth", 20, "b added and streaming, locked refused")
        assert camera.plays == {"a": 1, "b": 1, "still": 0}, "camera a was not touched by the reload"
        cams.write_text(entry.format(name="b", var="CAM_PASSWORD", port=camera.port, path="b"))
        ingest.wait(lambda: ingest.camera("a") is None and ingest.camera("locked") is None, 10, "a and locked removed")
        assert 'camera="a"' not in ingest.series() and ingest.streaming("b") and camera.plays["b"] == 1
        ingest.readyz()
        assert ingest.sample("rtvi_ingest_config_reloads_total", result="applied") == 2
        assert ingest.stop() == 0
    output = ingest.proc.output
    assert "streaming from rtsp://viewer:***@127.0.0.1" in output and "refused the credentials" in output
    for secret in (PASSWORD, WRONG):
        assert secret not in output, "a credential reached the log"
        assert not any(secret in body for body in ingest.bodies), "a credential reached /metrics or /readyz"
    assert {r.key for r in read_frames(broker, topic)} == {"a", "b"}


@pytest.mark.parametrize(("cameras", "env", "message"), [
    ("- {name: a, url: 'rtsp://u:${NOT_SET}@h/x'}", {},
     "{file}: entry 1: camera 'a': ${NOT_SET} is not set in the environment"),
    ("- {name: a, url: 'rtsp://h/x'}\n- {name: a, url: 'rtsp://h/y'}", {},
     "camera name 'a' is used twice: names must be unique"),
    ("- {name: a, url: 'ftp://u:${PW}@h/x'}", {"PW": PASSWORD},
     "{file}: entry 1: camera 'a': url 'ftp://u:***@h/x': the scheme must be one of rtsp://, rtsps://, http://, "
     "https://"),
], ids=["unset-variable", "duplicate-name", "bad-scheme"])
def test_bad_configuration_is_one_line_and_exit_2_before_anything_starts(tmp_path, cameras, env, message):
    cams = cameras_file(tmp_path, cameras)
    proc = Proc(rtvi_command("ingest", "--cameras", str(cams), "--bootstrap-servers", f"127.0.0.1:{free_port()}",
                             "--metrics-port", str(free_port())), tmp_path / "ingest.log", env=env)
    try:
        assert proc.popen.wait(60) == 2, proc.output
    finally:
        proc.kill()
    assert proc.output.strip().splitlines() == ["rtvi ingest: " + message.replace("{file}", str(cams))]
    assert PASSWORD not in proc.output
