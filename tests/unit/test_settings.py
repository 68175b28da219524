"""Settings from flags and RTVI_* variables: a variable only matters to the command that runs."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from rtvi import cli
from rtvi.settings import add_arguments, from_namespace, setting


@dataclass(frozen=True)
class Example:
    size: int = setting(8, "a number")
    camera: tuple[str, ...] = setting((), "repeatable", secret=True)


def parse(argv: list[str], environ: dict[str, str]) -> Example:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser, Example, environ=environ)
    return from_namespace(Example, parser.parse_args(argv))


def test_a_repeatable_flag_replaces_its_variable_and_stays_out_of_the_repr():
    assert parse([], {}).camera == ()
    assert parse([], {"RTVI_CAMERA": "a=rtsp://h/1  b=rtsp://h/2"}).camera == ("a=rtsp://h/1", "b=rtsp://h/2")
    config = parse(["--camera", "c=rtsp://u:pw@h/3", "--camera", "d=x"], {"RTVI_CAMERA": "a=rtsp://h/1"})
    assert config.camera == ("c=rtsp://u:pw@h/3", "d=x") and "pw" not in repr(config)


def test_a_variable_is_converted_for_the_command_that_runs_and_named_when_wrong():
    assert parse([], {"RTVI_SIZE": "5"}).size == 5
    assert parse(["--size", "7"], {"RTVI_SIZE": "lots"}).size == 7, "a flag wins, its variable is not read"
    with pytest.raises(argparse.ArgumentError, match="RTVI_SIZE='lots': invalid literal"):
        parse([], {"RTVI_SIZE": "lots"})


def test_a_variable_of_one_command_never_breaks_another(monkeypatch):
    # `rtvi ingest --resize` is WxH, `rtvi export --resize` a number: every parser is built at start.
    monkeypatch.setenv("RTVI_RESIZE", "640x480")
    args = cli.build_parser().parse_args(["ingest", "--camera", "a=rtsp://h/x"])
    assert args.resize == "640x480"
