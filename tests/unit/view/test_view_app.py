"""The view's update message format, and that the view needs no torch (it runs in the consumer image)."""

from __future__ import annotations

import json
import subprocess
import sys

from rtvi.view.app import allowed_hosts, pack
from rtvi.view.config import ViewConfig
from test_packaging import NO_TORCH



def test_an_update_is_header_length_header_and_the_image_bytes_untouched():
    image = b"\xff\xd8\xff\xe0 jpeg bytes \x00\x01"
    message = pack({"stream": "cam-0", "image": {"frame": 3}}, image)
    length = int.from_bytes(message[:4], "big")
    assert json.loads(message[4:4 + length]) == {"stream": "cam-0", "image": {"frame": 3}}
    assert message[4 + length:] == image
    assert pack({"stream": "x"})[4 + int.from_bytes(pack({"stream": "x"})[:4], "big"):] == b""


def test_the_view_runs_without_torch(tmp_path):
    # Far enough to import the whole app: it stops at the address it cannot listen on (exit 2).
    out = subprocess.run([sys.executable, "-c", NO_TORCH, "view", "--host", "203.0.113.7", "--port", "8080"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2 and "rtvi view: cannot listen on 203.0.113.7:8080" in out.stderr, out.stderr


def test_loopback_views_answer_to_loopback_names_only():
    assert "localhost" in allowed_hosts(ViewConfig(host="127.0.0.1"))
    assert "attacker.example" not in allowed_hosts(ViewConfig(host="::1"))
    assert allowed_hosts(ViewConfig(host="0.0.0.0")) == ["*"], "in a pod: the Service and port-forward names vary"
    assert allowed_hosts(ViewConfig(host="127.0.0.1", allowed_hosts="view.example, localhost")) == [
        "view.example", "localhost"]
