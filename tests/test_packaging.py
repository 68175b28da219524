"""Packaging checks that need no container engine: Dockerfile lint, and the consumer
image's promise that rtvi consume / produce run without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO

# Runs rtvi with torch and torchvision made unimportable, as in the consumer image.
NO_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "torchvision"}:
            raise ImportError(f"{name} is not installed in the consumer image")
sys.meta_path.insert(0, Block())
sys.argv = ["rtvi", *sys.argv[1:]]
import rtvi.streaming.consumer, rtvi.streaming.producer.producer, rtvi.streaming.ingest.supervisor, rtvi.local.broker
from rtvi.cli import main
sys.exit(main())
"""


def test_dockerfiles_pass_hadolint():
    hadolint = Path(sys.executable).with_name("hadolint")
    out = subprocess.run([str(hadolint), "Dockerfile.inference", "Dockerfile.consumer"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_consumer_and_producer_run_without_torch(tmp_path):
    for command in (["consume", "--help"], ["produce", "--help"], ["ingest", "--help"], ["--help"]):
        out = subprocess.run([sys.executable, "-c", NO_TORCH, *command], capture_output=True, text=True, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
    # A real produce run without torch gets as far as its (empty) source, not an import error.
    out = subprocess.run(
        [sys.executable, "-c", NO_TORCH, "produce", "--source", "images", "--images", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )
    assert out.returncode == 2 and "no images" in out.stderr, out.stderr
