"""The chart on a real Kubernetes node: a kubelet runs rtvi's images through containerd.

The node (support.kube_node) has a kubelet, kube-proxy, containerd, a bridge CNI network,
CoreDNS and metrics-server (the resource metrics API), all built or installed here; the
images are built from the unchanged Dockerfiles and imported, since no registry is
reachable. The chart is installed with the real helm as the README does, except that the
Redpanda operator and broker images cannot be had: ``redpanda.enabled=false`` points it at
a Kafka broker running in a pod of the same node (support.node_images). One release serves
every test, in this order (each leaves it as it found it: one inference pod, two consumers):

- the inference pods turn Ready only through the kubelet's ``grpc:`` probes;
- ``kubectl top`` answers through the aggregation layer and metrics-server;
- two consumers in one group share the frames topic's partitions and classify every frame
  of the producer Job; ``rtvi status`` shows each partition's lag and owner;
- a pod that turns Ready later (the HPA's minimum raised while frames flow) gets calls
  within seconds through ``dns:///<release>-inference-headless``;
- the HPA adds a pod under ``rtvi loadtest``'s load and removes it after, losing no frame;
- a rolling update of the inference Deployment under load loses no frame;
- a hung server leaves the Service and is restarted by the liveness probe.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from types import SimpleNamespace

import pytest

from conftest import end_offsets, metric_sum, read_predictions, rtvi_command
from support import kube_metrics
from support.kube_node import NODE_NAME
from support.node_images import KAFKA_PORT
from support.node_release import installed_release
from test_streaming_pipeline import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.timeout(2400)]

NAMESPACE = "rtvi-node"
RELEASE = "rtvi"
TOPICS = {"frames": "frames", "predictions": "predictions"}
PARTITIONS = 2
STREAMS, FPS, DURATION = 2, 4, 20  # the install's producer Job: 160 frames (its two streams land on both partitions)
INFERENCE = f"{RELEASE}-inference"
CONSUMER = f"{RELEASE}-consumer"
CONSUMERS = 2
# The HPA on the node: one to two inference pods, each requesting 300m CPU (three fit beside
# the broker, two consumers, metrics-server and a load test's producer while a rollout surges)
# and limited to one core; short windows so a scale-up and a scale-down take seconds.
HPA_TARGET = 80  # percent of the CPU request
HPA_BEHAVIOR = {
    "scaleUp": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}]},
    "scaleDown": {"stabilizationWindowSeconds": 15, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}]},
}
# A pod that turns Ready must get calls within this long (the consumer looks the headless
# Service's name up every 5 s; the API's timestamps have whole seconds).
CALLS_WITHIN_S = 12


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
        "inference.autoscaling.enabled": "true", "inference.autoscaling.minReplicas": "1",
        "inference.autoscaling.maxReplicas": "2",
        "inference.autoscaling.targetCPUUtilizationPercentage": str(HPA_TARGET),
        "inference.resources.requests.cpu": "300m", "inference.resources.requests.memory": "256Mi",
        "inference.resources.limits.cpu": "1", "inference.resources.limits.memory": "1Gi",
        # Quick probes and a short drain, so a hung server is seen and replaced within a minute.
        "inference.probes.startup.periodSeconds": "2", "inference.probes.startup.failureThreshold": "150",
        "inference.probes.readiness.periodSeconds": "2", "inference.probes.liveness.periodSeconds": "5",
        "inference.probes.liveness.failureThreshold": "2", "inference.probes.liveness.timeoutSeconds": "2",
        "inference.shutdownDelaySeconds": "2", "inference.shutdownGraceSeconds": "8",
        "inference.terminationGracePeriodSeconds": "15",
        "consumer.replicas": str(CONSUMERS),
        "consumer.resources.requests.cpu": "100m", "consumer.reportInterval": "5",
        "consumer.batchSize": "4", "consumer.maxInFlight": "4",
        "topics.frames.name": TOPICS["frames"], "topics.predictions.name": TOPICS["predictions"],
        "producer.enabled": "true", "producer.streams": str(STREAMS), "producer.fps": str(FPS),
        "producer.duration": str(DURATION), "producer.syntheticSize": "320x240",
        "producer.resources.requests.cpu": "100m",
    }
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")] + [
        "--set-json", f"inference.autoscaling.behavior={json.dumps(HPA_BEHAVIOR)}"]


@pytest.fixture(scope="module")
def release(kube_node):
    """The broker, its topics and the rtvi release, installed and waited for."""
    cluster, node, tags = kube_node
    with installed_release(cluster, NAMESPACE, RELEASE, {name: PARTITIONS for name in TOPICS.values()},
                           values(tags)) as broker:
        yield SimpleNamespace(cluster=cluster, node=node, tags=tags, broker=broker)


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


def images(cluster, pod: str) -> float:
    """Images an inference pod classified (0 while its metrics port is not up yet)."""
    try:
        return metric_sum(pod_metrics(cluster, pod, 8002), "rtvi_inference_images_total", model="resnet18")
    except AssertionError:
        return 0.0


def consumer_names(cluster) -> list[str]:
    return [p["metadata"]["name"] for p in pods(cluster, component("consumer"))]


def channel_swaps(cluster, consumer: str) -> float:
    """How often a consumer's inference client took a new channel into use (protocol.balancing)."""
    return metric_sum(pod_metrics(cluster, consumer, 9100), "rtvi_inference_client_channel_swaps_total")


def lookup_cost(cluster, consumer: str) -> tuple[int, float]:
    """A consumer's DNS lookups of the inference Service so far: (count, mean milliseconds)."""
    text = pod_metrics(cluster, consumer, 9100)
    count = metric_sum(text, "rtvi_inference_client_lookup_duration_seconds_count")
    total = metric_sum(text, "rtvi_inference_client_lookup_duration_seconds_sum")
    return int(count), round(1000 * total / count, 2) if count else 0.0


def rtvi_cli(cluster, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    return subprocess.run([sys.executable, "-m", "rtvi", *args, "--release", RELEASE, "--namespace", NAMESPACE],
                          capture_output=True, text=True, timeout=timeout, env=env)


def start_loadtest(cluster, fps: float, duration: float) -> subprocess.Popen:
    """``rtvi loadtest`` with two streams of 320x240 frames, in the background (its output piped)."""
    return subprocess.Popen(
        [sys.executable, "-m", "rtvi", "loadtest", "--streams", "2", "--fps", str(fps), "--duration", str(duration),
         "--synthetic-size", "320x240", "--release", RELEASE, "--namespace", NAMESPACE],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


def keys(predictions: list[dict]) -> set[tuple[str, int]]:
    return {(p["stream"], p["frame"]) for p in predictions if "top" in p}


def frame_offsets(release) -> dict[int, int]:
    return {p: end_offsets(release.broker, TOPICS["frames"], PARTITIONS).get(p, 0) for p in range(PARTITIONS)}


def wait_all_classified(release, first: dict[int, int], last: dict[int, int], timeout: float = 300) -> int:
    """Every frame record published between two offset snapshots gets its prediction (matched by
    partition and offset); how many there were."""
    published = {(p, offset) for p in range(PARTITIONS) for offset in range(first[p], last[p])}
    assert published, (first, last)

    def classified() -> set | None:
        done = {(p["partition"], p["offset"]) for p in read_predictions(release.broker, TOPICS["predictions"], 10**9,
                                                                        timeout=5) if "top" in p} & published
        return done if done == published else None

    wait_for(classified, timeout, f"all {len(published)} frames published in the window classified", interval=3)
    return len(published)


def hpa(cluster) -> dict:
    return cluster.get("hpa", INFERENCE, "-n", NAMESPACE)


def ready_inference_pods(cluster) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in pods(cluster, component("inference"))
            if p["metadata"].get("deletionTimestamp") is None and condition(p, "Ready")["status"] == "True"}


def seconds_to_first_call(cluster, pod: dict) -> float:
    """From a pod's Ready transition (the API's whole-second timestamp) to the moment its /metrics
    first counts an image, polled every half second; fails after a minute without one."""
    ready = datetime.fromisoformat(condition(pod, "Ready")["lastTransitionTime"].replace("Z", "+00:00")).timestamp()
    name = pod["metadata"]["name"]
    wait_for(lambda: images(cluster, name) > 0, 60, f"{name} to get its first call after turning Ready", interval=0.5)
    return time.time() - ready


def wait_one_inference_pod(cluster, timeout: float = 240) -> None:
    """Back to where each test starts: the HPA at one replica, one Ready inference pod, none terminating."""
    wait_for(lambda: hpa(cluster)["status"].get("currentReplicas") == 1 and len(pods(cluster, component("inference")))
             == 1 and len(ready_inference_pods(cluster)) == 1, timeout, "the HPA to settle on one inference pod",
             interval=2)


def test_inference_pods_turn_ready_through_the_kubelets_grpc_probes(release):
    cluster = release.cluster
    # The install's producer Job is load: on a slow CPU (AVX2-only, fp32) it alone takes the pod
    # past the HPA's target, and the HPA adds a second pod until the Job is done.
    wait_one_inference_pod(cluster)
    inference = pods(cluster, component("inference"))
    assert len(inference) == 1, "the HPA's minimum, once the Job's load is gone"
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


def test_kubectl_top_reports_the_pods_usage_through_metrics_server(release):
    """The resource metrics API: the API server's aggregation layer -> metrics-server (built from
    its module, deployed from its own manifests) -> the kubelet's /metrics/resource."""
    cluster = release.cluster
    kube_metrics.wait_available(cluster, 120)

    def usage() -> dict[str, tuple[str, str]] | None:
        out = cluster.kubectl("top", "pods", "-n", NAMESPACE, "--no-headers", check=False)
        rows = {name: (cpu, memory) for name, cpu, memory in (line.split() for line in out.stdout.splitlines())}
        return rows if out.returncode == 0 and any(name.startswith(INFERENCE) for name in rows) else None

    rows = wait_for(usage, 90, "kubectl top pods to list the inference pod", interval=3)
    print("\n" + cluster.kubectl("top", "pods", "-n", NAMESPACE).stdout)
    for name, (cpu, memory) in rows.items():
        assert re.fullmatch(r"\d+m", cpu) and re.fullmatch(r"\d+Mi", memory), (name, cpu, memory)
    inference = next(memory for name, (_, memory) in rows.items() if name.startswith(INFERENCE))
    assert int(inference.removesuffix("Mi")) > 50, "a loaded model's resident memory"
    node = cluster.kubectl("top", "node", "--no-headers").stdout.split()
    assert node[0] == NODE_NAME and node[1].endswith("m"), node


def test_two_consumers_share_the_partitions_and_classify_every_frame_of_the_producer_job(release):
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

    consumers = pods(cluster, component("consumer"))
    assert len(consumers) == CONSUMERS
    env = {e["name"]: e.get("value") for e in consumers[0]["spec"]["containers"][0]["env"]}
    assert env["RTVI_INFERENCE_URL"] == f"dns:///{INFERENCE}-headless:8001"
    assert env["RTVI_MODEL"] == "resnet18"
    owned, processed = {}, {}
    for pod in consumers:
        name = pod["metadata"]["name"]
        text = pod_metrics(cluster, name, 9100)
        owned[name] = {p for p in range(PARTITIONS)
                       if metric_sum(text, "rtvi_consumer_partition_assigned", topic=TOPICS["frames"],
                                     partition=str(p)) == 1}
        processed[name] = metric_sum(text, "rtvi_consumer_frames_processed_total")
    print(f"\npartitions owned: {owned}; frames classified per consumer: {processed}")
    # One group: each partition has exactly one owner, and each consumer owns one. The Job's two
    # streams are keyed to different partitions, so both consumers classified frames.
    assert sorted(p for parts in owned.values() for p in parts) == list(range(PARTITIONS)), owned
    assert all(owned.values()) and all(count > 0 for count in processed.values()), (owned, processed)
    assert sum(processed.values()) >= produced

    wait_one_inference_pod(cluster)  # the Job's load may have scaled it up (see the first test)
    status = rtvi_cli(cluster, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    print(status.stdout)
    assert f"deployment {CONSUMER}: {CONSUMERS}/{CONSUMERS} ready" in status.stdout, status.stdout
    assert f"deployment {INFERENCE}: 1/1 ready" in status.stdout, status.stdout
    for name, parts in owned.items():
        for p in parts:
            assert re.search(rf"{TOPICS['frames']}/{p}: lag \d+, owned by {name}$", status.stdout, re.MULTILINE), \
                status.stdout


def test_kubectl_logs_shows_the_consumers_metrics_block(release):
    """The consumers' figures come from their /metrics (through the pod proxy); `kubectl logs` shows
    people the same figures as a block (rendered from those metrics; nothing reads it back)."""
    from rtvi.streaming.consumer import report

    cluster = release.cluster
    names = [p["metadata"]["name"] for p in pods(cluster, component("consumer"))]
    done = wait_for(lambda: (lambda n: n if n >= STREAMS * FPS * DURATION else None)(sum(
        metric_sum(pod_metrics(cluster, name, 9100), "rtvi_consumer_frames_processed_total") for name in names)),
        60, "the consumers' metrics counting the Job's frames together", interval=2)
    logs = {name: cluster.kubectl("-n", NAMESPACE, "logs", name).stdout for name in names}
    for name, log in logs.items():
        assert report.BEGIN in log and report.END in log, f"{name} logged no metrics block:\n{log[-2000:]}"
        last = log[log.rindex(report.BEGIN):]
        for heading in ("THROUGHPUT", "PROCESSING TIME", "ERRORS", "DROPPED", "STREAMS"):
            assert heading in last, last
        print(f"\n{name}:\n{last[:1200]}")
    print(f"frames processed by the consumers together: {done:.0f}")


def test_an_inference_pod_that_turns_ready_later_gets_calls_within_seconds(release):
    """One inference pod serves a steady stream of frames; a second one is added (the HPA's
    minimum raised to two, as a scale-up adds one) and turns Ready some 10-30 s later, long after
    the consumers' channels resolved the headless Service. It must get calls within
    CALLS_WITHIN_S of turning Ready, and every frame published meanwhile gets its prediction."""
    cluster = release.cluster
    wait_one_inference_pod(cluster)
    (serving,) = ready_inference_pods(cluster)
    first = frame_offsets(release)
    swaps_before = {name: channel_swaps(cluster, name) for name in consumer_names(cluster)}
    producer = subprocess.Popen(
        rtvi_command("produce", "--bootstrap-servers", release.broker.bootstrap_servers, "--topic", TOPICS["frames"],
                     "--streams", "2", "--fps", "5", "--duration", "180", "--synthetic-size", "320x240",
                     "--stream-prefix", "later", "--report-interval", "0"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        before = images(cluster, serving)
        wait_for(lambda: images(cluster, serving) > before, 60, f"frames to flow through {serving}", interval=1)
        cluster.kubectl("-n", NAMESPACE, "patch", "hpa", INFERENCE, "--type=merge", "-p",
                        json.dumps({"spec": {"minReplicas": 2}}))
        added = wait_for(lambda: next((p for n, p in ready_inference_pods(cluster).items() if n != serving), None),
                         180, "a second inference pod to turn Ready", interval=0.5)
        seconds = seconds_to_first_call(cluster, added)
        calls = {name: images(cluster, name) for name in ready_inference_pods(cluster)}
    finally:
        producer.send_signal(signal.SIGINT)
        out, _ = producer.communicate(timeout=60)
        cluster.kubectl("-n", NAMESPACE, "patch", "hpa", INFERENCE, "--type=merge", "-p",
                        json.dumps({"spec": {"minReplicas": 1}}))
    assert producer.returncode == 0 and "0 delivery errors" in out, out[-2000:]
    count = wait_all_classified(release, first, frame_offsets(release))
    swaps = {name: channel_swaps(cluster, name) - before for name, before in swaps_before.items()}
    lookups = {name: lookup_cost(cluster, name) for name in swaps}
    print(f"\n{added['metadata']['name']} got its first call {seconds:.1f} s after turning Ready "
          f"(images per pod then: {calls}); {count} frames published meanwhile, all classified; "
          f"channels swapped per consumer: {swaps}; DNS lookups per consumer (count, mean ms): {lookups}")
    assert seconds <= CALLS_WITHIN_S, f"{seconds:.1f} s from Ready to the first call"
    assert all(count > 0 for count in calls.values()), calls
    # The stream ids "later-0" and "later-1" are keyed to different partitions: each consumer's
    # client saw the new address and took a channel to both pods into use.
    assert all(count >= 1 for count in swaps.values()), swaps


def test_the_hpa_adds_an_inference_pod_under_load_and_removes_it_after(release):
    """``rtvi loadtest`` drives the inference pod's CPU over the HPA's target (utilization read
    through metrics-server); the HPA adds a pod, which turns Ready through its gRPC probes and
    takes calls; once the load ends the HPA goes back to one pod. ``rtvi status`` shows the
    utilization beside its target, the load test's summary the replica range, and every frame
    published during the test gets its prediction."""
    cluster = release.cluster
    wait_one_inference_pod(cluster)
    (serving,) = ready_inference_pods(cluster)
    first = frame_offsets(release)
    started = time.monotonic()
    timeline: list[str] = []

    def mark(event: str) -> None:
        timeline.append(f"{time.monotonic() - started:5.0f} s  {event}")

    loadtest = start_loadtest(cluster, fps=12, duration=90)
    try:
        mark("load test started")
        scaled = wait_for(lambda: (h := hpa(cluster))["status"].get("desiredReplicas", 1) >= 2 and h, 150,
                          "the HPA to want a second inference pod", interval=1)
        cpu = scaled["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
        mark(f"HPA: 2 replicas wanted at {cpu}% CPU (target {HPA_TARGET}%)")
        status = rtvi_cli(cluster, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert re.search(rf"hpa {INFERENCE}: \d current, 2 desired \(min 1, max 2\); cpu \d+%/{HPA_TARGET}% "
                         r"\(current/target\)", status.stdout), status.stdout
        added = wait_for(lambda: next((p for n, p in ready_inference_pods(cluster).items() if n != serving), None),
                         180, "the added inference pod to turn Ready", interval=0.5)
        mark(f"{added['metadata']['name']} Ready")
        seconds = seconds_to_first_call(cluster, added)
        mark(f"{added['metadata']['name']} took its first call, {seconds:.1f} s after turning Ready")
        out, _ = loadtest.communicate(timeout=900)
        mark("load test done")
    finally:
        if loadtest.poll() is None:
            loadtest.kill()
            loadtest.communicate()
    assert loadtest.returncode == 0, out
    calls = {name: images(cluster, name) for name in ready_inference_pods(cluster)}
    wait_one_inference_pod(cluster)
    mark("HPA back to one inference pod")
    count = wait_all_classified(release, first, frame_offsets(release))
    print("\n" + status.stdout + "\n" + out[out.index("load test "):] + "\n" + "\n".join(timeline)
          + f"\nimages per pod: {calls}; {count} frames published, all classified")
    assert "inference replicas: min 1, max 2 (HPA)" in out, out
    assert seconds <= CALLS_WITHIN_S, f"{seconds:.1f} s from Ready to the first call"
    assert len(calls) == 2 and all(count > 0 for count in calls.values()), calls


def test_rolling_update_of_the_inference_deployment_under_load_loses_no_frame(release):
    """Every frame record published while every inference pod is replaced (the load test's)
    gets its prediction, matched by the frame's partition and offset."""
    cluster = release.cluster
    wait_one_inference_pod(cluster)
    first = frame_offsets(release)
    old = {p["metadata"]["name"] for p in pods(cluster, component("inference"))}
    loadtest = start_loadtest(cluster, fps=4, duration=45)
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
    last = frame_offsets(release)
    job = cluster.get("jobs", "-n", NAMESPACE, "--sort-by=.metadata.creationTimestamp")["items"][-1]
    log = cluster.kubectl("-n", NAMESPACE, "logs", f"job/{job['metadata']['name']}").stdout
    delivered = int(re.search(r"(\d+) delivered, 0 delivery errors", log).group(1))
    # Every frame published in the window: the load test's, and any other producer's.
    published = sum(last[p] - first[p] for p in range(PARTITIONS))
    assert published >= delivered > 0, (first, last, log[-1500:])
    wait_all_classified(release, first, last)
    print(f"\nrolling update under load: {published} frames published, all classified; "
          f"pods {sorted(old)} -> {sorted(new)}")


def test_a_hung_server_leaves_the_service_and_the_liveness_probe_restarts_it(release):
    cluster, node = release.cluster, release.node
    wait_one_inference_pod(cluster)  # else the HPA's scale-down may remove the very pod hung here
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
