"""SASL/SCRAM and TLS between rtvi and a real Apache Kafka broker, configured as the chart does.

The chart gives the producer and the consumer exactly these variables (see
charts/rtvi/templates/_helpers.tpl, ``rtvi.kafkaEnv``): RTVI_SECURITY_PROTOCOL,
RTVI_SASL_MECHANISM, RTVI_SASL_USERNAME, RTVI_SASL_PASSWORD (from a Secret) and
RTVI_SSL_CA_LOCATION (a CA file mounted from a Secret). The broker's certificate is
signed at test time by a throw-away CA made with openssl.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import Proc, kafka_broker, rtvi_command
from support.certs import TestCA, require_openssl
from test_streaming_pipeline import inference  # noqa: F401  (fixture: one server per module)

USER, PASSWORD = "rtvi", "s3cret-for-tests"
FAIL_WITHIN_S = 20  # a wrong password or CA must end the process with one line, not hang


def make_ca_and_server_cert(folder: Path, name: str = "ca") -> tuple[Path, Path]:
    """(CA certificate, server key+certificate PEM) for 127.0.0.1/localhost."""
    server = TestCA(folder, name).issue("server", dns=("localhost",), ips=("127.0.0.1",))
    keystore = folder / "server-keystore.pem"  # Kafka's PEM keystore: private key, then the certificate
    keystore.write_text(server.key.read_text() + server.cert.read_text())
    return folder / f"{name}.pem", keystore


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    """A broker with a SASL_SSL (SCRAM-SHA-512) and an SSL listener; the PLAINTEXT one stays
    for the broker itself."""
    from support.kafka_broker import Listener

    require_openssl()
    work = tmp_path_factory.mktemp("kafka-secure")
    ca, keystore = make_ca_and_server_cert(work / "certs")
    other_ca, _ = make_ca_and_server_cert(work / "other-certs", name="other")
    broker = kafka_broker(
        work,
        listeners=(Listener("SASL_SSL", "SASL_SSL"), Listener("SSL", "SSL")),
        properties={
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(keystore),
        },
        scram_users={f"SCRAM-SHA-512:{USER}": PASSWORD},
    )
    with broker:
        broker.ca, broker.other_ca = ca, other_ca
        yield broker


def chart_env(broker, protocol: str, *, password: str = PASSWORD, ca: Path | None = None) -> dict[str, str]:
    """The variables the chart's ``rtvi.kafkaEnv`` sets, for one listener."""
    env = {"RTVI_BOOTSTRAP_SERVERS": broker.listener(protocol).address, "RTVI_SECURITY_PROTOCOL": protocol,
           "RTVI_SSL_CA_LOCATION": str(ca or broker.ca)}
    if protocol.startswith("SASL"):
        env |= {"RTVI_SASL_MECHANISM": "SCRAM-SHA-512", "RTVI_SASL_USERNAME": USER, "RTVI_SASL_PASSWORD": password}
    return env


def config_from_env(env: dict[str, str]):
    """A KafkaConfig parsed from those variables by rtvi's own settings loader."""
    import argparse

    from rtvi.settings import add_arguments, from_namespace
    from rtvi.streaming.kafka_config import KafkaConfig

    parser = argparse.ArgumentParser()
    add_arguments(parser, KafkaConfig, environ=env)
    return from_namespace(KafkaConfig, parser.parse_args([]))


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SSL"])
def test_pipeline_end_to_end_over_a_secured_listener(tmp_path, secure, protocol, inference):  # noqa: F811
    from confluent_kafka import Consumer, TopicPartition

    from rtvi.streaming.kafka_config import ensure_topics

    env = chart_env(secure, protocol)
    config = config_from_env(env)
    frames, predictions = f"frames-{protocol.lower()}", f"predictions-{protocol.lower()}"
    ensure_topics(config, {frames: 2, predictions: 2})  # admin calls over the secured listener
    producer = Proc(rtvi_command("produce", "--topic", frames, "--streams", "2", "--max-frames", "10",
                                 "--synthetic-size", "320x240", "--fps", "0", "--report-interval", "0"),
                    tmp_path / "produce.log", env=env)
    assert producer.popen.wait(120) == 0, producer.output
    assert "20 delivered, 0 delivery errors" in producer.output
    consumer = Proc(rtvi_command("consume", "--topic", frames, "--predictions-topic", predictions,
                                 "--group", f"group-{protocol}", "--inference-url", inference.address,
                                 "--metrics-port", "0", "--session-timeout-ms", "6000", "--report-interval", "0",
                                 "--max-frames", "20"), tmp_path / "consume.log", env=env)
    try:
        assert consumer.popen.wait(120) == 0, consumer.output
    finally:
        consumer.kill()
    # Read back over the same listener with the same settings.
    reader = Consumer(config.consumer("test-reader", f"reader-{protocol}"))
    reader.assign([TopicPartition(predictions, p, 0) for p in range(2)])
    records, deadline = [], time.monotonic() + 60
    while len(records) < 20 and time.monotonic() < deadline:
        records += [m for m in reader.consume(100, 0.5) if m.error() is None]
    reader.close()
    assert len(records) == 20


@pytest.mark.parametrize("fault", ["wrong password", "wrong CA"])
@pytest.mark.parametrize("command", ["produce", "consume", "ingest"])
def test_bad_credentials_fail_fast_with_one_line(tmp_path, secure, command, fault):
    env = chart_env(secure, "SASL_SSL", password="not-the-password" if fault == "wrong password" else PASSWORD,
                    ca=secure.other_ca if fault == "wrong CA" else None)
    args = {"produce": ("--topic", "frames-auth", "--max-frames", "5", "--synthetic-size", "64x48"),
            "consume": ("--topic", "frames-auth", "--predictions-topic", "predictions-auth", "--metrics-port", "0",
                        "--inference-url", "127.0.0.1:9"),
            "ingest": ("--topic", "frames-auth", "--camera", "cam=rtsp://127.0.0.1:9/cam", "--metrics-port", "0")}[command]
    started = time.monotonic()
    proc = Proc(rtvi_command(command, *args), tmp_path / f"{command}.log", env=env)
    try:
        code = proc.popen.wait(FAIL_WITHIN_S + 10)
    finally:
        proc.kill()
    seconds = time.monotonic() - started
    errors = [line for line in proc.output.splitlines() if "ERROR" in line or line.startswith("rtvi")]
    print(f"\n{command} with {fault}: exit {code} after {seconds:.1f}s: {errors}")
    assert code != 0
    assert seconds < FAIL_WITHIN_S
    expected = "authentication failed" if fault == "wrong password" else "certificate"
    assert len([line for line in errors if expected in line.lower()]) == 1, proc.output


@pytest.mark.parametrize("fault", ["wrong password", "wrong CA"])
def test_admin_calls_fail_fast_with_a_clear_error(secure, fault):
    from rtvi.streaming.kafka_config import KafkaSecurityError, ensure_topics

    env = chart_env(secure, "SASL_SSL", password="not-the-password" if fault == "wrong password" else PASSWORD,
                    ca=secure.other_ca if fault == "wrong CA" else None)
    started = time.monotonic()
    with pytest.raises(KafkaSecurityError, match="authentication failed" if fault == "wrong password" else "TLS failed"):
        ensure_topics(config_from_env(env), {"frames-never": 1}, timeout=60)
    assert time.monotonic() - started < FAIL_WITHIN_S
