"""Every command's errors become exit codes in one place, `cli.main`, with one line each."""

from __future__ import annotations

import argparse

import pytest

from rtvi import cli
from rtvi.cluster.kube import ClusterNotFound, ClusterUnreachable
from rtvi.errors import BadInput, BoundMissed, ExitCode, RtviError, Unreachable, WorkFailed
from rtvi.export.errors import AccuracyGateFailed, ExportError
from rtvi.local.broker import BrokerError, BrokerNotInstalled
from rtvi.protocol.errors import InferenceError
from rtvi.serving.errors import ModelLoadError
from rtvi.settings import ConfigError
from rtvi.streaming.kafka_config import BrokerUnreachable, KafkaSecurityError
from rtvi.streaming.producer.sources.base import SourceError


@pytest.mark.parametrize(("error", "code"), [
    (WorkFailed("3 frames failed"), ExitCode.FAILED),
    (AccuracyGateFailed("int8 top-1 agreement 0.5"), ExitCode.FAILED),
    (BrokerError("tansu exited with 1"), ExitCode.FAILED),
    (InferenceError("INVALID_ARGUMENT", "bad image"), ExitCode.FAILED),
    (ModelLoadError("model.onnx: corrupt"), ExitCode.BAD_INPUT),
    (ExportError("--output o: not empty"), ExitCode.BAD_INPUT),
    (SourceError("video file 'x' does not exist"), ExitCode.BAD_INPUT),
    (KafkaSecurityError("kafka authentication failed"), ExitCode.BAD_INPUT),
    (BrokerNotInstalled("no embedded broker"), ExitCode.BAD_INPUT),
    (ClusterNotFound("no Kubernetes cluster configured"), ExitCode.BAD_INPUT),
    (BoundMissed("latency bound MISSED"), ExitCode.BOUND_MISSED),
    (BrokerUnreachable("no Kafka broker answered"), ExitCode.UNREACHABLE),
    (ClusterUnreachable("cannot reach the Kubernetes API"), ExitCode.UNREACHABLE),
    (InferenceError("UNAVAILABLE", "connection refused"), ExitCode.UNREACHABLE),
])
def test_each_error_class_ends_with_its_exit_code_and_one_line(monkeypatch, capsys, error, code):
    assert isinstance(error, RtviError)

    def handler(args: argparse.Namespace) -> ExitCode:
        raise error

    monkeypatch.setitem(cli.COMMANDS, "status", (cli.COMMANDS["status"][0], handler, "test"))
    assert cli.main(["status"]) == code
    err = capsys.readouterr().err
    assert err == f"rtvi status: {error}\n"


def test_a_bad_setting_prints_the_usage_and_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["produce", "--streams", "0"])
    assert exit_info.value.code == ExitCode.BAD_INPUT
    assert "streams must be >= 1" in capsys.readouterr().err
    assert issubclass(ConfigError, BadInput)


def test_the_classes_keep_their_meaning():
    assert [c.exit_code for c in (WorkFailed, BadInput, BoundMissed, Unreachable)] == [1, 2, 3, 4]
