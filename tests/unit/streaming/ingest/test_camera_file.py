"""The cameras file: parsed and checked whole, ${VAR} from the environment, reload plans."""

from __future__ import annotations

import pytest

from rtvi.streaming.ingest.cameras import (
    Camera, CamerasError, CamerasFile, Defaults, check_unique, expand, parse_file, parse_flag, plan,
)

ENV = {"GATE_PASSWORD": "hunter22", "DOCK_TOKEN": "t0k"}
DEFAULTS = Defaults(fps=5.0, resize=(640, 480))
EXAMPLE = """
- name: gate
  url: rtsp://viewer:${GATE_PASSWORD}@10.0.0.5:554/stream1
  fps: 2
  roi: [100, 50, 400, 300]
- name: dock.2
  url: https://cam.example/live.m3u8?token=${DOCK_TOKEN}&price=$$5
  resize: 320x240
"""


def test_a_cameras_file_with_defaults_and_variables():
    gate, dock = parse_file(EXAMPLE, "cams.yaml", DEFAULTS, ENV)
    assert gate == Camera("gate", "rtsp://viewer:hunter22@10.0.0.5:554/stream1", 2.0, (640, 480), (100, 50, 400, 300))
    assert dock == Camera("dock.2", "https://cam.example/live.m3u8?token=t0k&price=$5", 5.0, (320, 240), None)
    assert "hunter22" not in repr(gate) + gate.shown_url
    assert dock.shown_url == "https://cam.example/live.m3u8?token=***&price=$5"


def test_an_empty_file_is_no_cameras_yet():
    assert parse_file("", "cams.yaml", DEFAULTS, ENV) == []
    assert parse_file("# none yet\n", "cams.yaml", DEFAULTS, ENV) == []


@pytest.mark.parametrize(("text", "message"), [
    ("name: gate", "cams.yaml: expected a list of cameras"),
    ("- [gate]", "cams.yaml: entry 1: expected a mapping with name and url"),
    ("- {name: a, url: 'rtsp://h/x'}\n- {name: b, url: 'rtsp://h/x', fsp: 5}", "entry 2: unknown key(s) fsp"),
    ("- {name: 'bad name', url: 'rtsp://h/x'}", "name 'bad name' must be 1-63 letters"),
    ("- {name: a}", "entry 1: camera 'a': url is missing"),
    ("- {name: a, url: 'ftp://u:hunter22@h/x'}", "camera 'a': url 'ftp://u:***@h/x': the scheme must be one of"),
    ("- {name: a, url: 'rtsp://u:${NOPE}@h/x'}", "camera 'a': ${NOPE} is not set in the environment"),
    ("- {name: a, url: 'rtsp://h/x', fps: 0}", "fps must be a number in (0, 120]"),
    ("- {name: a, url: 'rtsp://h/x', fps: true}", "fps must be a number"),
    ("- {name: a, url: 'rtsp://h/x', resize: 640}", "resize: expected WIDTHxHEIGHT"),
    ("- {name: a, url: 'rtsp://h/x', roi: [0, 0, 10]}", "roi must be [x, y, width, height]"),
    ("- {name: a, url: 'rtsp://h/x', roi: [0, 0, 0, 10]}", "roi must be"),
    ("- {name: a, url: 'rtsp://h/x'\n", "cams.yaml: not valid YAML at line"),
])
def test_each_mistake_is_one_line_naming_the_entry_and_never_the_secret(text, message):
    with pytest.raises(CamerasError) as raised:
        parse_file(text, "cams.yaml", DEFAULTS, ENV)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert "hunter22" not in str(raised.value)


def test_expand_variables_and_dollars():
    assert expand("a${GATE_PASSWORD}b$$c$d", ENV) == "ahunter22b$c$d"


def test_a_camera_flag_is_name_equals_url():
    camera = parse_flag("lobby=rtsp://u:p@h/x?a=b", DEFAULTS, ENV)
    assert (camera.name, camera.url, camera.fps) == ("lobby", "rtsp://u:p@h/x?a=b", 5.0)
    with pytest.raises(CamerasError, match="expected NAME=URL") as raised:
        parse_flag("rtsp://u:hunter22@h/x", DEFAULTS, ENV)
    assert "hunter22" not in str(raised.value)


def test_names_are_unique():
    cameras = parse_file(EXAMPLE, "cams.yaml", DEFAULTS, ENV)
    check_unique(cameras)
    with pytest.raises(CamerasError, match="'gate' is used twice"):
        check_unique(cameras + [parse_flag("gate=rtsp://h/y", DEFAULTS, ENV)])


def test_a_plan_starts_new_stops_gone_restarts_changed_and_leaves_the_rest():
    a, b, c = (Camera(n, f"rtsp://h/{n}") for n in "abc")
    changed_b = Camera("b", "rtsp://h/b", fps=10)
    changes = plan({"a": a, "b": b, "c": c}, [a, changed_b, Camera("d", "rtsp://h/d")])
    assert [x.name for x in changes.start] == ["d"] and changes.stop == ("c",)
    assert changes.restart == (changed_b,)
    assert not plan({"a": a}, [a])


def test_the_file_is_parsed_again_only_when_its_bytes_change(tmp_path):
    path = tmp_path / "cams.yaml"
    path.write_text(EXAMPLE)
    cams = CamerasFile(str(path), DEFAULTS, ENV)
    assert len(cams.read()) == 2 and not cams.changed()
    path.write_text(EXAMPLE + "- {name: x}\n")
    assert cams.changed()
    with pytest.raises(CamerasError, match="url is missing"):
        cams.read()
    assert not cams.changed(), "a wrong file is reported once, not at every check until it is fixed"
    path.unlink()
    assert not cams.changed()
    with pytest.raises(CamerasError, match="cannot read the cameras file"):
        cams.read()
