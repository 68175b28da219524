"""Camera URLs through OpenCV's FFmpeg, and why one did not open, against real servers on loopback:
the tests' RTSP camera (Digest authentication) and small HTTP servers."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rtvi.errors import ExitCode
from rtvi.net import free_port
from rtvi.streaming.producer.sources.base import (
    SourceAuthFailed, SourceError, SourceNotFound, SourceTimeout, SourceUnreachable, SourceUnsupported,
)
from rtvi.streaming.producer.sources.probe import diagnose
from rtvi.streaming.producer.sources.url import FFMPEG_OPTIONS_ENV, UrlSource, url_problem
from support.rtsp_server import Clip, RtspServer

PASSWORD = "s3cret-Pw"


@pytest.fixture(scope="module")
def camera():
    with RtspServer({"cam": Clip.make(160, 120, 25, 1)}, credentials=("viewer", PASSWORD)) as server:
        yield server


def read_frames(url: str, count: int = 5) -> tuple[int, ...]:
    """Open ``url``, read ``count`` frames, close; the last frame's shape."""
    source = UrlSource(url, open_timeout_s=5, read_timeout_s=5)
    assert PASSWORD not in source.description + repr(source)
    source.open()
    try:
        for _ in range(count):
            assert source.grab()
        return source.retrieve().shape
    finally:
        source.close()


def _no_secret(error: SourceError) -> SourceError:
    assert PASSWORD not in str(error) and "wrong-pw" not in str(error)
    return error


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_an_rtsp_camera_streams_through_opencvs_ffmpeg_over_tcp_or_udp(camera, monkeypatch, transport):
    # What configure_ffmpeg sets once per process (OpenCV reads it at every open).
    monkeypatch.setenv(FFMPEG_OPTIONS_ENV, f"rtsp_transport;{transport}")
    before = camera.transports.get(transport, 0)
    assert read_frames(camera.url("cam", "viewer", PASSWORD)) == (120, 160, 3)
    assert camera.transports[transport] == before + 1


@pytest.mark.parametrize(("path", "user", "password", "error", "words"), [
    ("cam", "viewer", "wrong-pw", SourceAuthFailed, "refused the credentials (401"),
    ("cam", None, None, SourceAuthFailed, "needs credentials"),
    ("nope", "viewer", PASSWORD, SourceNotFound, "no stream at this path (404"),
])
def test_a_failed_open_says_why_in_one_typed_error(camera, path, user, password, error, words):
    source = UrlSource(camera.url(path, user, password), open_timeout_s=5)
    with pytest.raises(error, match=words.replace("(", r"\(")) as raised:
        source.open()
    _no_secret(raised.value)
    assert raised.value.exit_code == ExitCode.BAD_INPUT


def test_a_stream_that_answers_but_cannot_be_decoded_is_unsupported(camera):
    # OpenCV opened nothing, yet the camera answers 200: what it sends is not decodable.
    error = _no_secret(diagnose(camera.url("cam", "viewer", PASSWORD), 5, open_seconds=0.1))
    assert isinstance(error, SourceUnsupported) and "cannot decode" in str(error)


def test_nothing_listening_is_unreachable_and_exits_4():
    error = _no_secret(diagnose(f"rtsp://viewer:{PASSWORD}@127.0.0.1:{free_port()}/cam", 2, 0.0))
    assert isinstance(error, SourceUnreachable) and "connection refused" in str(error)
    assert error.exit_code == ExitCode.UNREACHABLE and error.retryable


def test_a_name_that_does_not_resolve_is_unreachable():
    error = diagnose("rtsp://no-such-camera.invalid/x", 2, 0.0)
    assert isinstance(error, SourceUnreachable) and "cannot resolve host 'no-such-camera.invalid'" in str(error)


def test_silence_is_a_timeout():
    with socket.socket() as listener:  # accepts (the kernel's backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"rtsp://127.0.0.1:{listener.getsockname()[1]}/cam"
        assert isinstance(diagnose(url, 0.3, 0.0), SourceTimeout)
    assert "open timeout" in str(diagnose(url, 5, open_seconds=5.0))


class _Http(BaseHTTPRequestHandler):
    """An HTTP camera: 401 with a Basic challenge unless the right credentials come; then
    /video.mjpg is an MJPEG stream (multipart JPEGs, 25 a second), /video an HTML page, the rest 404."""

    def do_GET(self) -> None:  # noqa: N802
        import base64

        good = "Basic " + base64.b64encode(f"viewer:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != good:
            status, headers = 401, {"WWW-Authenticate": 'Basic realm="cam"'}
        elif self.path == "/video.mjpg":
            return self._mjpeg()
        else:
            status, headers = (200, {"Content-Type": "text/html"}) if self.path == "/video" else (404, {})
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _mjpeg(self) -> None:
        import time

        import cv2
        import numpy as np

        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        try:
            for index in range(50):
                jpeg = cv2.imencode(".jpg", np.full((120, 160, 3), index * 5, np.uint8))[1].tobytes()
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                 + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                time.sleep(0.04)
        except OSError:  # the reader went away
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_camera():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Http)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_an_http_mjpeg_camera_streams_with_basic_auth(http_camera):
    assert read_frames(f"http://viewer:{PASSWORD}@{http_camera}/video.mjpg") == (120, 160, 3)
    with pytest.raises(SourceAuthFailed, match="refused the credentials"):
        UrlSource(f"http://viewer:wrong-pw@{http_camera}/video.mjpg", open_timeout_s=5).open()


@pytest.mark.parametrize(("path", "password", "error"), [
    ("/video", "wrong-pw", SourceAuthFailed),
    ("/other", PASSWORD, SourceNotFound),
    ("/video", PASSWORD, SourceUnsupported),  # an HTML page, not a stream
])
def test_http_cameras_are_diagnosed_with_basic_auth_on_a_new_connection(http_camera, path, password, error):
    assert isinstance(_no_secret(diagnose(f"http://viewer:{password}@{http_camera}{path}", 2, 0.0)), error)


@pytest.mark.parametrize(("url", "problem"), [
    ("rtsp://cam/x", None),
    ("https://u:p@cam:8443/live.m3u8", None),
    ("ftp://u:pw@cam/x", "the scheme must be one of rtsp://, rtsps://, http://, https://"),
    ("rtsp://u:pw@cam:port/x", "is not a valid URL"),
    ("rtsp:///x", "has no host"),
])
def test_url_problems_are_named_without_the_password(url, problem):
    found = url_problem(url)
    assert (found is None) == (problem is None)
    if problem:
        assert problem in found and ":pw@" not in found
