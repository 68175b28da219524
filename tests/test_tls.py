"""Mutual TLS between `rtvi consume` and `rtvi serve`: real processes, a real Kafka broker,
certificates made by openssl at test time.

- frames flow producer -> broker -> consumer -> TLS server (client certificate required) -> predictions;
- health stays plaintext on --health-port (the kubelet's gRPC probes cannot speak TLS), which
  serves nothing else;
- a consumer that cannot work (no certificate, a certificate from another CA, the wrong server
  name, no TLS at all) ends within seconds with one line and exit 2, not an endless retry;
- rotated files are picked up without a restart, on both ends, the way Kubernetes rotates a
  mounted Secret (a symlink swapped to a new directory); a broken rotation keeps the old set.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from grpc_health.v1 import health_pb2

from conftest import (
    InferenceServer, free_port, health_status, metric_sum, produce_frames, read_predictions, start_consumer,
)
from support.certs import Issued, TestCA, require_openssl
from test_streaming_pipeline import assert_complete, wait_for

FAIL_WITHIN_S = 20  # python start, Kafka connect, one readiness check: seconds, not a retry loop
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    require_openssl()
    root = tmp_path_factory.mktemp("pki")
    ca, other = TestCA(root / "ca"), TestCA(root / "other", "other")
    return SimpleNamespace(
        ca=ca, other=other,
        server=ca.issue("server", dns=("localhost",), ips=("127.0.0.1",)),
        client=ca.issue("consumer", client=True),
        rogue=other.issue("rogue-consumer", client=True),
        other_server=other.issue("other-server", dns=("localhost",), ips=("127.0.0.1",)),
        other_client=other.issue("other-consumer", client=True),
    )


class SecretDir:
    """Files laid out as the kubelet mounts a Secret: each name a symlink through ``..data``
    into a timestamped directory, rotated by swapping ``..data`` atomically."""

    def __init__(self, path: Path, files: dict[str, Path]) -> None:
        self.path, self.version = path, 0
        path.mkdir(parents=True)
        self.write(files)
        for name in files:
            (path / name).symlink_to(Path("..data") / name)

    def write(self, files: dict[str, Path]) -> None:
        self.version += 1
        version = self.path / f"..v{self.version}"
        version.mkdir()
        for name, source in files.items():
            (version / name).write_bytes(source.read_bytes())
        link = self.path / "..data_tmp"
        link.symlink_to(version.name)
        os.replace(link, self.path / "..data")

    def __truediv__(self, name: str) -> Path:
        return self.path / name


def server_files(cert: Issued, client_ca: Path) -> dict[str, Path]:
    return {"tls.crt": cert.cert, "tls.key": cert.key, "ca.crt": client_ca}


def tls_server(tmp_path: Path, secret: Path, *extra: str, port: int | None = None) -> InferenceServer:
    """`rtvi serve` with mutual TLS on its port and plaintext health on another."""
    health_port = free_port()
    srv = InferenceServer(tmp_path, "--tls-cert", str(secret / "tls.crt"), "--tls-key", str(secret / "tls.key"),
                          "--tls-client-ca", str(secret / "ca.crt"), "--health-port", str(health_port),
                          "--instances", "1", *extra, port=port)
    srv.health_address = f"127.0.0.1:{health_port}"
    return srv


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory, pki):
    work = tmp_path_factory.mktemp("mtls-serve")
    secret = SecretDir(work / "tls", server_files(pki.server, pki.ca.pem))
    srv = tls_server(work, secret.path)
    try:
        srv.wait_serving()
        yield srv
    finally:
        srv.proc.terminate()


def tls_flags(ca: Path, client: Issued | None = None, server_name: str = "") -> list[str]:
    flags = ["--inference-tls-ca", str(ca)]
    if client:
        flags += ["--inference-tls-cert", str(client.cert), "--inference-tls-key", str(client.key)]
    if server_name:
        flags += ["--inference-tls-server-name", server_name]
    return flags


def url(server: InferenceServer) -> str:
    """Through DNS, as in Kubernetes: the name checked in the certificate is ``localhost``."""
    return f"dns:///localhost:{server.port}"


def peer_certificate(address: str, ca: Path, client: Issued) -> bytes:
    """The DER certificate a new TLS connection to ``address`` is shown."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(client.cert, client.key)
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as conn:
        return conn.getpeercert(binary_form=True)


def der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


# --- the health port ------------------------------------------------------------------------------

def test_health_is_plaintext_on_the_health_port_and_nothing_else_is(mtls_server, pki):
    for service in ("", "inference.GRPCInferenceService", "liveness"):
        assert health_status(mtls_server.health_address, service) == SERVING, service
    with grpc.insecure_channel(mtls_server.health_address) as channel:
        server_live = channel.unary_unary("/inference.GRPCInferenceService/ServerLive",
                                          request_serializer=bytes, response_deserializer=bytes)
        with pytest.raises(grpc.RpcError) as refused:
            server_live(b"", timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # The serving port speaks TLS only: no plaintext health there ...
    assert health_status(mtls_server.address, timeout=2) is None
    # ... but the same health service, over mutual TLS.
    credentials = grpc.ssl_channel_credentials(pki.ca.pem.read_bytes(), pki.client.key.read_bytes(),
                                               pki.client.cert.read_bytes())
    with grpc.secure_channel(f"localhost:{mtls_server.port}", credentials) as channel:
        from grpc_health.v1 import health_pb2_grpc

        check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=5)
        assert check.status == SERVING


# --- frames over mutual TLS -----------------------------------------------------------------------

def test_frames_flow_over_mutual_tls(tmp_path, broker, topics, mtls_server, pki):
    streams, frames = 2, 20
    produce_frames(tmp_path, broker, topics["frames"], frames, streams)
    consumer = start_consumer(tmp_path, broker, topics, url(mtls_server), *tls_flags(pki.ca.pem, pki.client),
                              "--max-frames", str(streams * frames))
    try:
        assert consumer.popen.wait(120) == 0, consumer.output
    finally:
        consumer.kill()
    predictions = read_predictions(broker, topics["predictions"], streams * frames)
    assert_complete(predictions, streams, frames)
    assert all("top" in p for p in predictions), [p for p in predictions if "top" not in p][:3]
    assert metric_sum(mtls_server.metrics_text(), "rtvi_inference_images_total") >= streams * frames


def test_tritonclient_calls_the_mutual_tls_server(mtls_server, pki):
    """The peer client Triton users have, with its own TLS options, through a name override
    (as from a laptop through a port-forward to the regular Service)."""
    import numpy as np
    import tritonclient.grpc as triton

    from conftest import jpeg_bytes

    client = triton.InferenceServerClient(
        f"127.0.0.1:{mtls_server.port}", ssl=True, root_certificates=str(pki.ca.pem),
        private_key=str(pki.client.key), certificate_chain=str(pki.client.cert),
        channel_args=[("grpc.ssl_target_name_override", "localhost")])
    try:
        assert client.is_model_ready("resnet18")
        images = triton.InferInput("images", [2], "BYTES")
        images.set_data_from_numpy(np.array([jpeg_bytes(seed=1), jpeg_bytes(seed=2)], dtype=np.object_))
        result = client.infer("resnet18", [images], outputs=[triton.InferRequestedOutput("logits", class_count=3)])
        assert result.as_numpy("logits").shape == (2, 3)
    finally:
        client.close()


# --- a consumer that cannot work stops at once, with one line ----------------------------------------

REFUSALS = {
    "no-client-certificate": (lambda pki: tls_flags(pki.ca.pem), "requires a client certificate"),
    "certificate-from-another-ca": (lambda pki: tls_flags(pki.ca.pem, pki.rogue), "refused the client certificate"),
    "wrong-server-name": (lambda pki: tls_flags(pki.ca.pem, pki.client, "inference.example"),
                              "not valid for 'inference.example'"),
    "ca-that-did-not-sign-the-server": (lambda pki: tls_flags(pki.other.pem, pki.client),
                                          "--inference-tls-ca does not trust"),
    "no-tls-at-all": (lambda pki: [], "speaks TLS: set --inference-tls-ca"),
}


@pytest.mark.parametrize("fault", REFUSALS)
def test_misconfigured_consumer_exits_2_with_one_line(tmp_path, broker, topics, mtls_server, pki, fault):
    flags, expected = REFUSALS[fault]
    started = time.monotonic()
    consumer = start_consumer(tmp_path, broker, topics, url(mtls_server), *flags(pki))
    try:
        code = consumer.popen.wait(FAIL_WITHIN_S + 30)
    finally:
        consumer.kill()
    seconds = time.monotonic() - started
    # rtvi's own lines (grpc's C core may add its own "E1202 ..." line about the handshake).
    lines = [line for line in consumer.output.splitlines() if line.startswith("rtvi") or " ERROR rtvi" in line]
    print(f"\n{fault}: exit {code} after {seconds:.1f} s: {lines}")
    assert code == 2, consumer.output
    assert seconds < FAIL_WITHIN_S, consumer.output
    assert len(lines) == 1 and lines[0].startswith("rtvi consume: ") and expected in lines[0], consumer.output
    assert "Traceback" not in consumer.output, consumer.output


def test_an_unreachable_server_is_retried_not_refused(tmp_path, broker, topics, pki):
    """Nothing listening is not a TLS failure: the consumer waits for the server (not ready)."""
    consumer = start_consumer(tmp_path, broker, topics, f"127.0.0.1:{free_port()}",
                              *tls_flags(pki.ca.pem, pki.client), "--readiness-interval-s", "0.5")
    try:
        time.sleep(5)
        assert consumer.popen.poll() is None, consumer.output
    finally:
        assert consumer.terminate() == 0, consumer.output


def test_bad_certificate_files_end_serve_and_consume_with_exit_2(tmp_path, broker, topics, pki):
    mismatched = {"tls.crt": pki.server.cert, "tls.key": pki.client.key, "ca.crt": pki.ca.pem}
    secret = SecretDir(tmp_path / "tls", mismatched)
    server = tls_server(tmp_path, secret.path)
    assert server.proc.popen.wait(120) == 2, server.proc.output
    assert f"rtvi serve: --tls-key {secret / 'tls.key'} is not the private key of --tls-cert" in server.proc.output
    consumer = start_consumer(tmp_path, broker, topics, "127.0.0.1:9", "--inference-tls-ca", str(tmp_path / "nope.pem"))
    assert consumer.popen.wait(60) == 2, consumer.output
    assert f"rtvi consume: --inference-tls-ca {tmp_path / 'nope.pem'}: no such file" in consumer.output


# --- rotation ---------------------------------------------------------------------------------------

def test_the_server_takes_rotated_files_at_the_next_connection(tmp_path, pki):
    secret = SecretDir(tmp_path / "tls", server_files(pki.server, pki.ca.pem))
    server = tls_server(tmp_path, secret.path)
    both_cas = tmp_path / "both-cas.pem"
    both_cas.write_text(pki.ca.pem.read_text() + pki.other.pem.read_text())
    try:
        server.wait_serving()
        assert peer_certificate(server.address, both_cas, pki.client) == der(pki.server.cert)
        # cert-manager renews with a new CA (the client CA stays): the next connection shows it.
        secret.write(server_files(pki.other_server, pki.ca.pem))
        assert peer_certificate(server.address, both_cas, pki.client) == der(pki.other_server.cert)
        # A rotation caught half-way (the key of another certificate) keeps what works.
        secret.write({**server_files(pki.other_server, pki.ca.pem), "tls.key": pki.server.key})
        assert peer_certificate(server.address, both_cas, pki.client) == der(pki.other_server.cert)
        text = server.metrics_text()
        assert metric_sum(text, "rtvi_tls_reloads_total", outcome="loaded") == 1
        assert metric_sum(text, "rtvi_tls_reloads_total", outcome="rejected") == 1
        assert health_status(server.health_address) == SERVING
    finally:
        assert server.proc.terminate() == 0, server.proc.output
    assert "TLS files changed but cannot be used" in server.proc.output


def test_the_consumer_takes_a_rotated_client_certificate(tmp_path, broker, topics, pki):
    """A CA rotation as cert-manager users run it: the server trusts the old and the new CA, the
    consumer's certificate moves to the new CA while it runs, then the server is restarted
    trusting the new CA alone. Only a consumer that reloaded its files gets through."""
    streams, frames = 2, 10
    both_cas = tmp_path / "both-cas.pem"
    both_cas.write_text(pki.ca.pem.read_text() + pki.other.pem.read_text())
    server_secret = SecretDir(tmp_path / "server-tls", server_files(pki.server, both_cas))
    client_secret = SecretDir(tmp_path / "client-tls", {"tls.crt": pki.client.cert, "tls.key": pki.client.key,
                                                        "ca.crt": pki.ca.pem})
    server = tls_server(tmp_path, server_secret.path)
    metrics_port = free_port()
    client = Issued(client_secret / "tls.crt", client_secret / "tls.key")
    consumer = start_consumer(tmp_path, broker, topics, url(server), *tls_flags(client_secret / "ca.crt", client),
                              "--metrics-port", str(metrics_port), "--readiness-interval-s", "0.5",
                              "--max-frames", str(2 * streams * frames))

    def consumer_metric(name: str, **labels: str) -> float:
        return metric_sum(metrics(metrics_port), name, **labels)

    try:
        server.wait_serving()
        produce_frames(tmp_path, broker, topics["frames"], frames, streams)
        wait_for(lambda: consumer_metric("rtvi_consumer_frames_processed_total") >= streams * frames,
                 60, "the first frames", consumer)
        client_secret.write({"tls.crt": pki.other_client.cert, "tls.key": pki.other_client.key,
                             "ca.crt": pki.ca.pem})
        wait_for(lambda: consumer_metric("rtvi_tls_reloads_total", outcome="loaded") == 1,
                 30, "the consumer to load its new certificate", consumer)
        server.proc.terminate()
        server_secret.write(server_files(pki.server, pki.other.pem))
        server = tls_server(tmp_path, server_secret.path, port=server.port)
        server.wait_serving()
        produce_frames(tmp_path, broker, topics["frames"], frames, streams)
        assert consumer.popen.wait(120) == 0, consumer.output
    finally:
        consumer.kill()
        server.proc.terminate()
    predictions = read_predictions(broker, topics["predictions"], 2 * streams * frames)
    assert all("top" in p for p in predictions), [p for p in predictions if "top" not in p][:3]
    assert len({(p["partition"], p["offset"]) for p in predictions}) == 2 * streams * frames
