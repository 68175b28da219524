"""`rtvi up`: the README's main job, end to end, leaving nothing running."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import Proc, rtvi_command


def _processes_mentioning(fragments: list[str]) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(f in text for f in fragments):
            found.append(text)
    return found


def test_up_runs_the_pipeline_and_stops_everything(tmp_path):
    proc = Proc(rtvi_command("up", "--duration", "8", "--streams", "1", "--fps", "5",
                             "--work-dir", str(tmp_path / "work")), tmp_path / "up.log")
    try:
        assert proc.popen.wait(240) == 0, proc.output
    finally:
        proc.kill()
    out = proc.output
    assert "RANDOM weights" in out  # no pretrained weights on this machine: said loudly
    processed = int(re.search(r"frames processed: (\d+)", out).group(1))
    assert processed > 0
    assert "ERRORS\n  total: 0" in out
    ports = re.findall(r"127\.0\.0\.1:(\d+)", out)
    assert ports, out
    assert _processes_mentioning([f"127.0.0.1:{p}" for p in ports]) == []
