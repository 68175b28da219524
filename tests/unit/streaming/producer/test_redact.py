"""Credentials masked in rtvi's own messages and in what native libraries write to fds 1 and 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rtvi.streaming.producer.sources.redact import redact, url_secrets


@pytest.mark.parametrize(("text", "shown"), [
    ("rtsp://admin:hunter2@10.0.0.5:554/stream1", "rtsp://admin:***@10.0.0.5:554/stream1"),
    ("open rtsps://a:b:c@cam/x failed", "open rtsps://a:***@cam/x failed"),
    ("http://cam/mjpg?user=u&pwd=s3cret&fps=5", "http://cam/mjpg?user=u&pwd=***&fps=5"),
    ("https://cam/live.m3u8?token=abc.def", "https://cam/live.m3u8?token=***"),
    ("rtsp://viewer@cam/x", "rtsp://viewer@cam/x"),  # no password: nothing to hide
    ("Connection to tcp://127.0.0.1:1?timeout=0 failed", "Connection to tcp://127.0.0.1:1?timeout=0 failed"),
    ("rtsp://cam:554/a and http://u:p@h/b", "rtsp://cam:554/a and http://u:***@h/b"),
    ("GET /v HTTP/1.1\r\nAuthorization: Basic dTpwdw==\r\nHost: h", "GET /v HTTP/1.1\r\nAuthorization: ***\r\nHost: h"),
])
def test_redact_masks_passwords_and_secret_query_values_only(text, shown):
    assert redact(text) == shown


def test_url_secrets_include_the_percent_encoded_and_decoded_password():
    assert url_secrets("rtsp://u:p%40ss@h/x?token=t0k") == {"p%40ss", "p@ss", "t0k"}
    assert url_secrets("rtsp://h/x") == set()


REDACTED_CHILD = """
import os, sys, time
from rtvi.streaming.producer.sources.redact import NativeOutputRedactor
with NativeOutputRedactor() as redactor:
    redactor.add("rtsp://viewer:hunter22@cam/x")
    os.write(2, b"[rtsp @ 0x1] Opening 'rtsp://viewer:hunter22@cam/x' for reading\\n")
    os.write(1, b"native: the password hunter22 on its own\\n")
    os.write(2, b"a prompt without newline: rtsp://x:y@z/")
    time.sleep(0.5)
    print("python: rtsp://other:pw@h/", file=sys.stderr)
print("after the redactor: restored", flush=True)
"""


def test_native_output_on_fds_1_and_2_is_redacted(tmp_path):
    out = subprocess.run([sys.executable, "-c", REDACTED_CHILD], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "hunter22" not in out.stdout + out.stderr
    assert "Opening 'rtsp://viewer:***@cam/x' for reading" in out.stderr
    assert "native: the password *** on its own" in out.stdout
    assert "a prompt without newline: rtsp://x:***@z/" in out.stderr  # forwarded though unfinished
    assert "python: rtsp://other:***@h/" in out.stderr
    assert out.stdout.endswith("after the redactor: restored\n")
