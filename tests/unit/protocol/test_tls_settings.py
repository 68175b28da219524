"""Pure parts of the v2 hop's TLS: which address a handshake check dials, and which
settings combinations the server and the client accept."""

from __future__ import annotations

import pytest

from rtvi.protocol.handshake import address
from rtvi.protocol.tls import InferenceTlsConfig
from rtvi.serving.config import ServerConfig
from rtvi.settings import ConfigError
from rtvi.streaming.consumer.config import ConsumerConfig


@pytest.mark.parametrize(("target", "expected"), [
    ("localhost:8001", ("localhost", 8001)),
    ("dns:///rtvi-inference-headless:8001", ("rtvi-inference-headless", 8001)),
    ("dns://10.96.0.10:53/rtvi-inference-headless.video.svc:8001", ("rtvi-inference-headless.video.svc", 8001)),
    ("dns:inference:9000", ("inference", 9000)),
    ("ipv4:10.0.0.1:8001,10.0.0.2:8001", ("10.0.0.1", 8001)),
    ("[::1]:8001", ("::1", 8001)),
    ("ipv6:[::1]:8001", ("::1", 8001)),
    ("inference", ("inference", 443)),
    ("unix:/run/rtvi.sock", None),
    ("xds:///inference", None),
    ("host:port", None),
])
def test_the_address_a_handshake_check_dials(target, expected):
    assert address(target) == expected


def test_client_tls_is_on_with_a_ca_and_carries_the_flags_for_messages():
    assert InferenceTlsConfig().inference_tls is None
    tls = InferenceTlsConfig(inference_tls_ca="ca.pem", inference_tls_cert="c.crt", inference_tls_key="c.key",
                             inference_tls_server_name="inference").inference_tls
    assert (tls.files.ca, tls.files.cert, tls.files.key, tls.server_name) == ("ca.pem", "c.crt", "c.key", "inference")
    assert tls.files.flags == ("--inference-tls-cert", "--inference-tls-key", "--inference-tls-ca")


@pytest.mark.parametrize(("settings", "message"), [
    ({"inference_tls_ca": "ca.pem", "inference_tls_cert": "c.crt"}, "go together"),
    ({"inference_tls_cert": "c.crt", "inference_tls_key": "c.key"}, "need --inference-tls-ca"),
    ({"inference_tls_server_name": "inference"}, "need --inference-tls-ca"),
])
def test_client_settings_that_cannot_work(settings, message):
    with pytest.raises(ConfigError, match=message):
        ConsumerConfig(**settings)


def test_the_consumer_still_checks_its_kafka_settings_with_the_tls_mixin():
    with pytest.raises(ConfigError, match="bootstrap servers must not be empty"):
        ConsumerConfig(bootstrap_servers=" ", inference_tls_ca="ca.pem")
    with pytest.raises(ConfigError, match="batch size"):
        ConsumerConfig(batch_size=0, inference_tls_ca="ca.pem")


@pytest.mark.parametrize(("settings", "message"), [
    ({"tls_cert": "s.crt"}, "go together"),
    ({"tls_client_ca": "ca.pem"}, "needs --tls-cert"),
    ({"health_port": 8001}, "must differ"),
    ({"health_port": 8002}, "must differ"),
    ({"health_port": 70000}, "0..65535"),
])
def test_server_settings_that_cannot_work(settings, message):
    with pytest.raises(ConfigError, match=message):
        ServerConfig(**settings)


def test_server_tls_files_name_the_server_flags():
    assert ServerConfig().tls is None
    assert ServerConfig(metrics_port=0, health_port=0).tls is None
    files = ServerConfig(tls_cert="s.crt", tls_key="s.key", tls_client_ca="ca.pem", health_port=8003).tls
    assert (files.cert, files.key, files.ca) == ("s.crt", "s.key", "ca.pem")
    assert files.flags == ("--tls-cert", "--tls-key", "--tls-client-ca")
