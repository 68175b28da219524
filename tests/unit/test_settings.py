"""Typed settings: flags and variables from one declaration (a variable only matters to the command
that runs), and back to a command line."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import pytest

from rtvi import cli
from rtvi.deadline import Deadline
from rtvi.local.config import UpConfig
from rtvi.local.pipeline import plan
from rtvi.serving.config import ServerConfig
from rtvi.settings import add_arguments, from_namespace, secret_environment, setting, to_argv
from rtvi.streaming.consumer.config import ConsumerConfig
from rtvi.streaming.producer.config import ProducerConfig


def parse(cls, argv: list[str], environ: dict[str, str] | None = None):
    parser = argparse.ArgumentParser()
    add_arguments(parser, cls, environ or {})
    return from_namespace(cls, parser.parse_args(argv))


@pytest.mark.parametrize("config", [
    ConsumerConfig(bootstrap_servers="b:9092", batch_size=3, max_frame_age_ms=250.5, inference_url="dns:///x:8001"),
    ServerConfig(port=9001, channels_last=False, compile=True, precision="bf16", model="/models/m"),
    ProducerConfig(source="images", images="/photos", loop=True, fps=2.5),
    ConsumerConfig(),
])
def test_to_argv_parses_back_into_the_same_config(config):
    assert parse(type(config), to_argv(config)) == config


def test_secrets_never_reach_a_command_line_or_a_repr():
    config = ConsumerConfig(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="rtvi",
                            sasl_password="hunter2")
    assert "hunter2" not in repr(config) and "hunter2" not in " ".join(to_argv(config))
    assert secret_environment(config) == {"RTVI_SASL_PASSWORD": "hunter2"}
    assert parse(ConsumerConfig, to_argv(config), secret_environment(config)) == config


def test_up_offers_its_services_settings_as_declared_there_with_its_own_defaults():
    up_help = {f.name: f.metadata["help"] for f in UpConfig.__dataclass_fields__.values()}
    consumer_help = {f.name: f.metadata["help"] for f in ConsumerConfig.__dataclass_fields__.values()}
    assert up_help["batch_size"] == consumer_help["batch_size"]
    assert UpConfig().max_frame_age_ms == 300.0 and ConsumerConfig().max_frame_age_ms == 0.0


def test_up_plans_each_service_from_its_own_config():
    ports = iter(range(7000, 7100))
    services = plan(UpConfig(streams=3, fps=5, batch_size=4, video="/clip.mp4"), "127.0.0.1:9092", "none", ports)
    assert services.consumer.inference_url == services.inference_address == "127.0.0.1:7000"
    assert (services.consumer.batch_size, services.consumer.max_frame_age_ms) == (4, 300.0)
    assert services.consumer.model == services.server.served_name == "resnet18"
    assert (services.producer.source, services.producer.video, services.producer.loop) == ("video", "/clip.mp4", True)
    assert services.producer.streams == 3 and services.producer.fps == 5
    assert "--metrics-port" in to_argv(services.consumer)


def test_up_with_mutual_tls_gives_each_end_its_files_and_probes_health_in_plaintext():
    config = UpConfig(tls_cert="s.crt", tls_key="s.key", tls_client_ca="ca.pem", inference_tls_ca="ca.pem",
                      inference_tls_cert="c.crt", inference_tls_key="c.key")
    services = plan(config, "127.0.0.1:9092", "none", iter(range(7000, 7100)))
    server, consumer = services.server, services.consumer
    assert (server.tls_cert, server.tls_key, server.tls_client_ca) == ("s.crt", "s.key", "ca.pem")
    assert (consumer.inference_tls_ca, consumer.inference_tls_cert, consumer.inference_tls_key) == (
        "ca.pem", "c.crt", "c.key")
    assert server.health_port and services.health_address == f"127.0.0.1:{server.health_port}"
    assert services.inference_address == f"127.0.0.1:{server.port}" != services.health_address
    plain = plan(UpConfig(), "127.0.0.1:9092", "none", iter(range(7000, 7100)))
    assert plain.server.health_port == 0 and plain.health_address == plain.inference_address
    with pytest.raises(ValueError, match="mutual TLS needs both ends"):
        UpConfig(tls_cert="s.crt", tls_key="s.key")


def test_deadline():
    deadline = Deadline.from_timeout(0.05)
    assert not deadline.expired and 0 < deadline.remaining <= 0.05
    time.sleep(0.06)
    assert deadline.expired and deadline.remaining == 0
    assert not Deadline.never().expired


@dataclass(frozen=True)
class Example:
    size: int = setting(8, "a number")
    camera: tuple[str, ...] = setting((), "repeatable", secret=True)


def parse_example(argv: list[str], environ: dict[str, str]) -> Example:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser, Example, environ=environ)
    return from_namespace(Example, parser.parse_args(argv))


def test_a_repeatable_flag_replaces_its_variable_and_stays_out_of_the_repr():
    assert parse_example([], {}).camera == ()
    assert parse_example([], {"RTVI_CAMERA": "a=rtsp://h/1  b=rtsp://h/2"}).camera == ("a=rtsp://h/1", "b=rtsp://h/2")
    config = parse_example(["--camera", "c=rtsp://u:pw@h/3", "--camera", "d=x"], {"RTVI_CAMERA": "a=rtsp://h/1"})
    assert config.camera == ("c=rtsp://u:pw@h/3", "d=x") and "pw" not in repr(config)


def test_a_variable_is_converted_for_the_command_that_runs_and_named_when_wrong():
    assert parse_example([], {"RTVI_SIZE": "5"}).size == 5
    assert parse_example(["--size", "7"], {"RTVI_SIZE": "lots"}).size == 7, "a flag wins, its variable is not read"
    with pytest.raises(argparse.ArgumentError, match="RTVI_SIZE='lots': invalid literal"):
        parse_example([], {"RTVI_SIZE": "lots"})


def test_a_variable_of_one_command_never_breaks_another(monkeypatch):
    # `rtvi ingest --resize` is WxH, `rtvi export --resize` a number: every parser is built at start.
    monkeypatch.setenv("RTVI_RESIZE", "640x480")
    args = cli.build_parser().parse_args(["ingest", "--camera", "a=rtsp://h/x"])
    assert args.resize == "640x480"


def test_a_repeatable_secret_setting_travels_in_the_environment_and_parses_back():
    config = Example(camera=("a=rtsp://u:pw@h/1", "b=rtsp://h/2"))
    assert to_argv(config) == [] and secret_environment(config) == {"RTVI_CAMERA": "a=rtsp://u:pw@h/1 b=rtsp://h/2"}
    assert parse_example(to_argv(config), secret_environment(config)) == config
    assert to_argv(Example(size=3)) == ["--size", "3"]
