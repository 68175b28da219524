"""`rtvi produce --source url`: a camera URL read through OpenCV's FFmpeg into Kafka, and a camera
that cannot be read refused in one typed line, its password never shown."""

from __future__ import annotations

import pytest

from conftest import Proc, free_port, rtvi_command
from support.rtsp_server import Clip, RtspServer
from test_ingest import PASSWORD, WRONG, read_frames


@pytest.fixture(scope="module")
def camera():
    with RtspServer({"cam": Clip.make(320, 240, fps=25, seconds=2)}, credentials=("viewer", PASSWORD)) as server:
        yield server


def produce(tmp_path, broker, url: str, *args: str) -> Proc:
    proc = Proc(rtvi_command("produce", "--bootstrap-servers", broker.bootstrap_servers, "--source", "url",
                             "--report-interval", "0", *args), tmp_path / f"produce-{free_port()}.log",
                env={"RTVI_URL": url})
    try:
        proc.popen.wait(120)
    finally:
        proc.kill()
    return proc


def test_a_camera_url_is_published_like_any_source(tmp_path, broker, camera, topics):
    proc = produce(tmp_path, broker, camera.url("cam", "viewer", PASSWORD), "--topic", topics["frames"],
                   "--max-frames", "10", "--fps", "10", "--resize", "160x120")
    assert proc.popen.returncode == 0, proc.output
    assert "10 delivered, 0 delivery errors" in proc.output
    records = read_frames(broker, topics["frames"])
    assert len(records) == 10 and {(r.key, r.info.width, r.info.height) for r in records} == {("stream-0", 160, 120)}
    assert PASSWORD not in proc.output


@pytest.mark.parametrize(("where", "code", "line"), [
    ("wrong-password", 2, "rtsp://viewer:***@127.0.0.1:{port}/cam: the camera refused the credentials (401 "
                          "Unauthorized)"),
    ("wrong-path", 2, "rtsp://viewer:***@127.0.0.1:{port}/nope: no stream at this path (404 Not Found)"),
    ("closed-port", 4, "rtsp://viewer:***@127.0.0.1:{port}/cam: connection refused by 127.0.0.1:{port}"),
])
def test_a_camera_that_cannot_be_read_is_one_typed_line(tmp_path, broker, camera, where, code, line):
    port = free_port() if where == "closed-port" else camera.port
    password = WRONG if where == "wrong-password" else PASSWORD
    path = "nope" if where == "wrong-path" else "cam"
    proc = produce(tmp_path, broker, f"rtsp://viewer:{password}@127.0.0.1:{port}/{path}")
    assert proc.popen.returncode == code, proc.output
    assert proc.output.strip().splitlines() == ["rtvi produce: " + line.format(port=port)]
    assert PASSWORD not in proc.output and WRONG not in proc.output
