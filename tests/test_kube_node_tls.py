"""The chart with mutual TLS between consumer and inference server, on the real node.

The release is test_kube_node's (the README's install with this node's images, its Kafka in
a pod of the same node) with ``inference.tls.enabled`` and two existing ``kubernetes.io/tls``
Secrets, made by openssl at test time: the server's certificate for the headless Service's
names, the consumer's client certificate, and the CA in both as ``ca.crt``. cert-manager
cannot run here (its controller and webhook images cannot be pulled); its Certificates are
checked offline against its own CRD (test_chart). On the node:

- the inference pod turns Ready through the kubelet's gRPC probes on the plaintext health
  port, while its serving port takes mutual TLS only;
- the producer Job's frames are classified by the consumer over mutual TLS;
- a rotated server Secret reaches the running server through the kubelet's volume update,
  and new connections get the new certificate without a restart.
"""

from __future__ import annotations

import socket
import ssl
import time
from types import SimpleNamespace

import pytest

from conftest import health_status, metric_sum, read_predictions
from support.certs import Issued, TestCA, require_openssl
from support.node_release import installed_release
from test_kube_node import values
from test_streaming_pipeline import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.timeout(2400)]

NAMESPACE = "rtvi-node-tls"
RELEASE = "rtvi"
TOPICS = ("frames", "predictions")
STREAMS, FPS, DURATION = 2, 4, 20  # the install's producer Job (test_kube_node's values): 160 frames
HEADLESS = f"{RELEASE}-inference-headless"
GRPC_PORT, HEALTH_PORT, METRICS_PORT = 8001, 8003, 8002
SERVER_SECRET, CLIENT_SECRET = "inference-tls", "consumer-tls"


def kubectl_tls_secret(cluster, name: str, issued: Issued, ca) -> None:
    """``kubectl create secret tls`` with ca.crt beside tls.crt and tls.key, as cert-manager writes it."""
    manifest = cluster.kubectl(
        "create", "secret", "generic", name, "-n", NAMESPACE, "--type", "kubernetes.io/tls",
        f"--from-file=tls.crt={issued.cert}", f"--from-file=tls.key={issued.key}", f"--from-file=ca.crt={ca}",
        "--dry-run=client", "-o", "yaml").stdout
    cluster.kubectl("apply", "-f", "-", stdin=manifest)


@pytest.fixture(scope="module")
def release(kube_node, tmp_path_factory):
    require_openssl()
    cluster, node, tags = kube_node
    ca = TestCA(tmp_path_factory.mktemp("node-pki"))
    names = (HEADLESS, f"{HEADLESS}.{NAMESPACE}", f"{HEADLESS}.{NAMESPACE}.svc",
             f"{HEADLESS}.{NAMESPACE}.svc.cluster.local")
    pki = SimpleNamespace(ca=ca, server=ca.issue("inference", dns=names),
                          renewed=ca.issue("inference-renewed", dns=names), client=ca.issue("consumer", client=True))

    def secrets() -> None:
        kubectl_tls_secret(cluster, SERVER_SECRET, pki.server, ca.pem)
        kubectl_tls_secret(cluster, CLIENT_SECRET, pki.client, ca.pem)

    tls = {"inference.tls.enabled": "true", "inference.tls.server.secretName": SERVER_SECRET,
           "inference.tls.client.secretName": CLIENT_SECRET, "inference.replicas": "1"}
    helm_args = [*values(tags), *(arg for key, value in tls.items() for arg in ("--set", f"{key}={value}"))]
    with installed_release(cluster, NAMESPACE, RELEASE, {name: 2 for name in TOPICS}, helm_args,
                           prepare=secrets) as broker:
        yield SimpleNamespace(cluster=cluster, broker=broker, pki=pki)


def pods(cluster, selector: str) -> list[dict]:
    return cluster.get("pods", "-n", NAMESPACE, "-l", selector)["items"]


def inference_pod(cluster) -> dict:
    found = pods(cluster, f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=inference")
    assert len(found) == 1, [p["metadata"]["name"] for p in found]
    return found[0]


def peer_certificate(ip: str, pki, client: Issued | None) -> bytes:
    """The DER certificate a new TLS connection to the pod is shown (verified for the headless name)."""
    context = ssl.create_default_context(cafile=str(pki.ca.pem))
    if client:
        context.load_cert_chain(client.cert, client.key)
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((ip, GRPC_PORT), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=HEADLESS) as conn:
        return conn.getpeercert(binary_form=True)


def der(issued: Issued) -> bytes:
    return ssl.PEM_cert_to_DER_cert(issued.cert.read_text())


def inference_metrics(cluster, pod: str) -> str:
    return cluster.kubectl("get", "--raw", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}:{METRICS_PORT}/proxy/metrics").stdout


def test_probes_pass_on_the_plaintext_health_port_while_the_serving_port_takes_mutual_tls_only(release):
    from rtvi.protocol.handshake import diagnose
    from rtvi.protocol.tls import ClientTls, PemFiles

    pod = inference_pod(release.cluster)
    container = pod["spec"]["containers"][0]
    for probe, service in (("startupProbe", "inference.GRPCInferenceService"),
                           ("readinessProbe", "inference.GRPCInferenceService"), ("livenessProbe", "liveness")):
        assert container[probe]["grpc"] == {"port": HEALTH_PORT, "service": service}, container[probe]
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] and status["restartCount"] == 0, pod["status"]
    ip = pod["status"]["podIP"]
    # What the kubelet asks, from the host over the node's bridge: plaintext health on its own port ...
    assert health_status(f"{ip}:{HEALTH_PORT}", "inference.GRPCInferenceService") == 1
    assert health_status(f"{ip}:{GRPC_PORT}", timeout=3) is None  # ... and no plaintext on the serving port.
    pki = release.pki
    target = f"{ip}:{GRPC_PORT}"
    with_cert = ClientTls(PemFiles(str(pki.client.cert), str(pki.client.key), str(pki.ca.pem)), HEADLESS)
    assert diagnose(target, with_cert) is None
    assert "requires a client certificate" in diagnose(target, ClientTls(PemFiles(ca=str(pki.ca.pem)), HEADLESS))
    assert "speaks TLS" in diagnose(target, None)


def test_the_producer_jobs_frames_are_classified_over_mutual_tls(release):
    cluster = release.cluster
    cluster.kubectl("-n", NAMESPACE, "wait", "--for=condition=complete", "job", "-l",
                    f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=producer", "--timeout=300s",
                    timeout=330)
    produced = STREAMS * FPS * DURATION
    predictions = read_predictions(release.broker, "predictions", produced, timeout=300)
    classified = {(p["stream"], p["frame"]) for p in predictions if "top" in p}
    assert len(classified) == produced, f"{len(classified)} of {produced} frames classified"
    consumer = pods(cluster, f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=consumer")[0]
    env = {e["name"]: e.get("value") for e in consumer["spec"]["containers"][0]["env"]}
    assert env["RTVI_INFERENCE_URL"] == f"dns:///{HEADLESS}:{GRPC_PORT}"
    assert env["RTVI_INFERENCE_TLS_CERT"].endswith("/tls.crt")
    pod = inference_pod(cluster)["metadata"]["name"]
    assert metric_sum(inference_metrics(cluster, pod), "rtvi_inference_images_total") >= produced
    print(f"\n{len(classified)} frames classified over mutual TLS through {pod}")


def test_a_rotated_server_secret_is_served_without_a_restart(release):
    """The kubelet swaps the Secret's files in the running pod; the server's next connection
    shows the renewed certificate."""
    cluster, pki = release.cluster, release.pki
    pod = inference_pod(cluster)
    ip = pod["status"]["podIP"]
    assert peer_certificate(ip, pki, pki.client) == der(pki.server)
    kubectl_tls_secret(cluster, SERVER_SECRET, pki.renewed, pki.ca.pem)
    started = time.monotonic()
    wait_for(lambda: peer_certificate(ip, pki, pki.client) == der(pki.renewed), 240,
             "the renewed certificate on a new connection", interval=3)
    print(f"\nrotated Secret served after {time.monotonic() - started:.0f} s (the kubelet's volume sync)")
    after = inference_pod(cluster)
    assert after["metadata"]["uid"] == pod["metadata"]["uid"]
    assert after["status"]["containerStatuses"][0]["restartCount"] == 0
    text = inference_metrics(cluster, pod["metadata"]["name"])
    assert metric_sum(text, "rtvi_tls_reloads_total", outcome="loaded") == 1
    assert metric_sum(text, "rtvi_tls_reloads_total", outcome="rejected") == 0
