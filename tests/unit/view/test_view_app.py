"""The view's update message format, and that the view needs no torch (it runs in the consumer image)."""

from __future__ import annotations

import json
import subprocess
import sys

from rtvi.view.app import pack

# As tests/test_packaging.py does: torch made unimportable, as in the consumer image.
NO_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "torchvision"}:
            raise ImportError(f"{name} is not installed in the consumer image")
sys.meta_path.insert(0, Block())
import rtvi.view.app, rtvi.view.reader
from rtvi.cli import main
sys.argv = ["rtvi", "view", "--help"]
sys.exit(main())
"""


def test_an_update_is_header_length_header_and_the_image_bytes_untouched():
    image = b"\xff\xd8\xff\xe0 jpeg bytes \x00\x01"
    message = pack({"stream": "cam-0", "image": {"frame": 3}}, image)
    length = int.from_bytes(message[:4], "big")
    assert json.loads(message[4:4 + length]) == {"stream": "cam-0", "image": {"frame": 3}}
    assert message[4 + length:] == image
    assert pack({"stream": "x"})[4 + int.from_bytes(pack({"stream": "x"})[:4], "big"):] == b""


def test_the_view_runs_without_torch():
    out = subprocess.run([sys.executable, "-c", NO_TORCH], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--predictions-topic" in out.stdout, out.stderr
