"""The chart on a real Kubernetes node: a kubelet runs rtvi's images through containerd.

The node (support.kube_node) has a kubelet, kube-proxy, containerd, a bridge CNI network
and CoreDNS, all built or installed here; the images are built from the unchanged
Dockerfiles and imported, since no registry is reachable. The chart is installed with
the real helm as the README does, except that the Redpanda operator and broker images
cannot be had: ``redpanda.enabled=false`` points it at a Kafka broker running in a pod of
the same node (support.node_images). On that node:

- the inference pods turn Ready only through the kubelet's ``grpc:`` probes, leave the
  Service when a server hangs and are restarted by the liveness probe;
- frames flow producer Job -> broker -> consumer -> two inference pods (through
  ``dns:///<release>-inference-headless``, both called) -> predictions;
- ``kubectl logs`` shows the consumer's metrics block, ``rtvi status`` and ``rtvi
  loadtest`` read the real pods;
- a rolling update of the inference Deployment under load loses no frame.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from conftest import REPO, end_offsets, metric_sum, read_predictions
from support.node_images import KAFKA_PORT, kafka_manifests
from test_streaming_pipeline import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.timeout(2400)]

NAMESPACE = "rtvi-node"
RELEASE = "rtvi"
TOPICS = {"frames": "frames", "predictions": "predictions"}
STREAMS, FPS, DURATION = 2, 4, 20  # the install's producer Job: 160 frames
INFERENCE = f"{RELEASE}-inference"
CONSUMER = f"{RELEASE}-consumer"


def values(tags: dict[str, str]) -> list[str]:
    """The README's install, with this node's images and a laptop-sized footprint."""
    inference_repo, inference_tag = tags["inference-onnx"].split(":")
    consumer_repo, consumer_tag = tags["consumer"].split(":")
    settings = {
        "redpanda.enabled": "false", "kafka.bootstrapServers": f"kafka:{KAFKA_PORT}",
        "inference.image.repository": inference_repo, "inference.image.tag": inference_tag,
        "inference.image.pullPolicy": "Never",
        "consumer.image.repository": consumer_repo, "consumer.image.tag": consumer_tag,
        "consumer.image.pullPolicy": "Never",
        # The ONNX-only image serves the model its build exported, as /opt/model.
        "inference.model": "/opt/model", "inference.modelName": "resnet18",
        "inference.replicas": "2", "inference.autoscaling.enabled": "false",
        "inference.resources.requests.cpu": "250m", "inference.resources.requests.memory": "256Mi",
        "inference.resources.limits.memory": "1Gi",
        # Quick probes and a short drain, so a hung server is seen and replaced within a minute.
        "inference.probes.startup.periodSeconds": "2", "inference.probes.startup.failureThreshold": "150",
        "inference.probes.readiness.periodSeconds": "2", "inference.probes.liveness.periodSeconds": "5",
        "inference.probes.liveness.failureThreshold": "2", "inference.probes.liveness.timeoutSeconds": "2",
        "inference.shutdownDelaySeconds": "2", "inference.shutdownGraceSeconds": "8",
        "inference.terminationGracePeriodSeconds": "15",
        "consumer.resources.requests.cpu": "100m", "consumer.reportInterval": "5",
        "consumer.batchSize": "4", "consumer.maxInFlight": "4",
        "topics.frames.name": TOPICS["frames"], "topics.predictions.name": TOPICS["predictions"],
        "producer.enabled": "true", "producer.streams": str(STREAMS), "producer.fps": str(FPS),
        "producer.duration": str(DURATION), "producer.syntheticSize": "320x240",
        "producer.resources.requests.cpu": "100m",
    }
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


@pytest.fixture(scope="module")
def release(kube_node):
    """The broker, its topics and the rtvi release, installed and waited for."""
    from rtvi.streaming.kafka_config import KafkaConfig, ensure_topics

    cluster, node, tags = kube_node
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.apply(kafka_manifests(), "-n", NAMESPACE)
    cluster.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/kafka", "--timeout=300s", timeout=330)
    kafka_ip = pods(cluster, "app.kubernetes.io/name=kafka")[0]["status"]["podIP"]
    # The test reads and writes the broker from the host, through the node's bridge.
    broker = SimpleNamespace(bootstrap_servers=f"{kafka_ip}:{KAFKA_PORT}")
    ensure_topics(KafkaConfig(bootstrap_servers=broker.bootstrap_servers), {name: 2 for name in TOPICS.values()})
    started = time.monotonic()
    cluster.helm("install", RELEASE, str(REPO / "charts" / "rtvi"), "--namespace", NAMESPACE, *values(tags),
                 "--wait", "--timeout", "15m")
    print(f"\nhelm install --wait on the real node: {time.monotonic() - started:.0f} s")
    try:
        yield SimpleNamespace(cluster=cluster, node=node, tags=tags, broker=broker)
    finally:
        cluster.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "3m", check=False)
        cluster.kubectl("delete", "namespace", NAMESPACE, "--timeout=180s", check=False, timeout=200)


def pods(cluster, selector: str) -> list[dict]:
    return cluster.get("pods", "-n", NAMESPACE, "-l", selector)["items"]


def component(name: str) -> str:
    return f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={name}"


def condition(pod: dict, kind: str) -> dict:
    return next(c for c in pod["status"].get("conditions", []) if c["type"] == kind)


def events(cluster, pod: str) -> list[dict]:
    return cluster.get("events", "-n", NAMESPACE, "--field-selector", f"involvedObject.name={pod}")["items"]


def pod_metrics(cluster, pod: str, port: int) -> str:
    """A pod's /metrics through the API server's pod proxy (API server -> pod IP on the bridge)."""
    return cluster.kubectl("get", "--raw", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}:{port}/proxy/metrics").stdout


def rtvi_cli(cluster, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    return subprocess.run([sys.executable, "-m", "rtvi", *args, "--release", RELEASE, "--namespace", NAMESPACE],
                          capture_output=True, text=True, timeout=timeout, env=env)


def keys(predictions: list[dict]) -> set[tuple[str, int]]:
    return {(p["stream"], p["frame"]) for p in predictions if "top" in p}


def test_inference_pods_turn_ready_through_the_kubelets_grpc_probes(release):
    cluster = release.cluster
    inference = pods(cluster, component("inference"))
    assert len(inference) == 2
    for pod in inference:
        container = pod["spec"]["containers"][0]
        for probe, service in (("startupProbe", "inference.GRPCInferenceService"),
                               ("readinessProbe", "inference.GRPCInferenceService"), ("livenessProbe", "liveness")):
            assert set(container[probe]) & {"grpc", "httpGet", "exec", "tcpSocket"} == {"grpc"}, container[probe]
            assert container[probe]["grpc"] == {"port": 8001, "service": service}
        status = pod["status"]["containerStatuses"][0]
        assert status["ready"] and condition(pod, "Ready")["status"] == "True", pod["status"]
        # Ready only after the container had started and the probes had run against it.
        assert condition(pod, "Ready")["lastTransitionTime"] >= status["state"]["running"]["startedAt"]
        # The kubelet probed before the server was serving (Python and the model take seconds to
        # start, the first probe comes at once) and held the pod back until the answer was SERVING.
        failed = [e["message"] for e in events(cluster, pod["metadata"]["name"]) if e["reason"] == "Unhealthy"]
        assert any(m.startswith("Startup probe failed") for m in failed), failed
        print(f"\n{pod['metadata']['name']}: startup probe failures before Ready: {failed}")


def test_frames_flow_from_the_producer_job_through_two_inference_pods(release):
    cluster = release.cluster
    job = next(j for j in cluster.get("jobs", "-n", NAMESPACE)["items"]
               if j["metadata"]["labels"].get("app.kubernetes.io/component") == "producer")
    cluster.kubectl("-n", NAMESPACE, "wait", "--for=condition=complete", f"job/{job['metadata']['name']}",
                    "--timeout=300s", timeout=330)
    produced = STREAMS * FPS * DURATION
    log = cluster.kubectl("-n", NAMESPACE, "logs", f"job/{job['metadata']['name']}").stdout
    assert f"{produced} delivered, 0 delivery errors" in log, log[-2000:]

    predictions = read_predictions(release.broker, TOPICS["predictions"], produced, timeout=300)
    assert len(keys(predictions)) == produced, f"{len(keys(predictions))} of {produced} frames classified"

    consumer = pods(cluster, component("consumer"))[0]
    env = {e["name"]: e.get("value") for e in consumer["spec"]["containers"][0]["env"]}
    assert env["RTVI_INFERENCE_URL"] == f"dns:///{INFERENCE}-headless:8001"
    assert env["RTVI_MODEL"] == "resnet18"
    calls = {pod["metadata"]["name"]: metric_sum(pod_metrics(cluster, pod["metadata"]["name"], 8002),
                                                 "rtvi_inference_images_total", model="resnet18")
             for pod in pods(cluster, component("inference"))}
    print(f"\nimages classified per inference pod: {calls}")
    assert len(calls) == 2 and all(count > 0 for count in calls.values()), calls


def test_kubectl_logs_shows_the_consumers_metrics_block(release):
    cluster = release.cluster

    def block() -> str | None:
        log = cluster.kubectl("-n", NAMESPACE, "logs", f"deployment/{CONSUMER}").stdout
        processed = re.findall(r"frames processed: (\d+)", log)
        return log if processed and int(processed[-1]) >= STREAMS * FPS * DURATION else None

    log = wait_for(block, 60, "a metrics block counting the producer Job's frames", interval=2)
    last = log[log.rindex("THROUGHPUT"):]
    for heading in ("THROUGHPUT", "PROCESSING TIME (capture to prediction, ms)", "ERRORS", "DROPPED"):
        assert heading in last, last
    print("\n" + last[:1200])


def test_rtvi_status_and_loadtest_read_the_real_pods(release):
    cluster = release.cluster
    status = rtvi_cli(cluster, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    print("\n" + status.stdout)
    assert f"deployment {INFERENCE}: 2/2 ready" in status.stdout, status.stdout
    assert f"deployment {CONSUMER}: 1/1 ready" in status.stdout, status.stdout

    loadtest = rtvi_cli(cluster, "loadtest", "--streams", "2", "--fps", "4", "--duration", "10",
                        "--synthetic-size", "320x240", timeout=900)
    print(loadtest.stdout[-2000:])
    assert loadtest.returncode == 0, loadtest.stdout + loadtest.stderr
    frames = int(re.search(r"frames processed:\s+(\d+)", loadtest.stdout).group(1))
    assert frames >= 80, loadtest.stdout


def test_rolling_update_of_the_inference_deployment_under_load_loses_no_frame(release):
    """Every frame record published while every inference pod is replaced (the load test's)
    gets its prediction, matched by the frame's partition and offset."""
    cluster = release.cluster
    first = {p: end_offsets(release.broker, TOPICS["frames"]).get(p, 0) for p in range(2)}
    old = {p["metadata"]["name"] for p in pods(cluster, component("inference"))}
    loadtest = subprocess.Popen(
        [sys.executable, "-m", "rtvi", "loadtest", "--streams", "2", "--fps", "4", "--duration", "45",
         "--synthetic-size", "320x240", "--release", RELEASE, "--namespace", NAMESPACE],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        wait_for(lambda: any(
            p["status"].get("phase") == "Running" for p in cluster.get("pods", "-n", NAMESPACE)["items"]
            if p["metadata"]["name"].startswith(f"{RELEASE}-loadtest-")), 120, "the load test's producer pod to run",
            interval=1)
        time.sleep(5)  # frames are flowing through the old pods
        cluster.kubectl("-n", NAMESPACE, "rollout", "restart", f"deployment/{INFERENCE}")
        cluster.kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{INFERENCE}", "--timeout=600s", timeout=630)
        out, _ = loadtest.communicate(timeout=900)
    finally:
        if loadtest.poll() is None:
            loadtest.kill()
            loadtest.communicate()
    assert loadtest.returncode == 0, out
    new = {p["metadata"]["name"] for p in pods(cluster, component("inference"))}
    assert not old & new, f"every inference pod was replaced: {old} -> {new}"
    last = {p: end_offsets(release.broker, TOPICS["frames"]).get(p, 0) for p in range(2)}
    published = {(p, offset) for p in range(2) for offset in range(first[p], last[p])}
    job = cluster.get("jobs", "-n", NAMESPACE, "--sort-by=.metadata.creationTimestamp")["items"][-1]
    log = cluster.kubectl("-n", NAMESPACE, "logs", f"job/{job['metadata']['name']}").stdout
    delivered = int(re.search(r"(\d+) delivered, 0 delivery errors", log).group(1))
    # Every frame published in the window: the load test's, and any other producer's.
    assert len(published) >= delivered > 0, (first, last, log[-1500:])

    def classified() -> set | None:
        done = {(p["partition"], p["offset"]) for p in read_predictions(release.broker, TOPICS["predictions"], 10**9,
                                                                        timeout=5) if "top" in p} & published
        return done if done == published else None

    wait_for(classified, 300, f"all {len(published)} load-test frames classified", interval=3)
    print(f"\nrolling update under load: {len(published)} frames published, all classified; "
          f"pods {sorted(old)} -> {sorted(new)}")


def test_a_hung_server_leaves_the_service_and_the_liveness_probe_restarts_it(release):
    cluster, node = release.cluster, release.node
    pod = pods(cluster, component("inference"))[0]
    name = pod["metadata"]["name"]
    pid = node.container_pid(pod["status"]["containerStatuses"][0]["containerID"])
    os.kill(pid, signal.SIGSTOP)  # the server hangs; its process and port stay
    try:
        wait_for(lambda: condition(cluster.get("pod", name, "-n", NAMESPACE), "Ready")["status"] == "False", 60,
                 "the readiness probe to take the hung pod out of service", interval=1)
        slices = cluster.get("endpointslices", "-n", NAMESPACE, "-l", f"kubernetes.io/service-name={INFERENCE}-headless")
        ready = {e["targetRef"]["name"] for s in slices["items"] for e in s.get("endpoints") or []
                 if e["conditions"].get("ready")}
        assert name not in ready, ready
        restarted = wait_for(lambda: (
            p if (p := cluster.get("pod", name, "-n", NAMESPACE))["status"]["containerStatuses"][0]["restartCount"] >= 1
            else None), 180, "the liveness probe to restart the hung container", interval=2)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)  # in case the kubelet has not killed it yet
        except ProcessLookupError:
            pass
    reasons = [(e["reason"], e["message"]) for e in events(cluster, name)]
    assert any(r == "Unhealthy" and m.startswith("Liveness probe failed") for r, m in reasons), reasons
    assert any(r == "Killing" and "liveness" in m for r, m in reasons), reasons
    wait_for(lambda: condition(cluster.get("pod", name, "-n", NAMESPACE), "Ready")["status"] == "True", 300,
             "the restarted server to pass its startup and readiness probes", interval=2)
    print(f"\n{name}: restartCount {restarted['status']['containerStatuses'][0]['restartCount']}, events: "
          + json.dumps([r for r, _ in reasons]))
