"""`rtvi status` and `rtvi loadtest` through a real Kubernetes API server.

The release is installed with the real helm on the control plane of the ``kube`` fixture;
kwok plays the pods (Ready, the load-test Job's pod completing), so every API call the
commands make is answered by kube-apiserver. Nothing runs inside the pods: no consumer
serves metrics, which the load test must say plainly.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import rtvi_command
from test_chart import CHART
from test_streaming_pipeline import wait_for

pytestmark = pytest.mark.timeout(3600)  # the first test may wait for the cold build of the control plane

RELEASE = NAMESPACE = "cmds"
BROKER = "kafka.example:9092"


@pytest.fixture(scope="module")
def release(kube):
    """The chart with an external broker (no Redpanda CRs here), rolled out on the fake nodes."""
    kube.helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
              "--set", "redpanda.enabled=false",
              "--set", f"kafka.bootstrapServers={BROKER}", "--wait", "--timeout", "5m")
    yield RELEASE
    kube.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "5m")


def rtvi(kube, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run(rtvi_command(*args, "--release", RELEASE, "--namespace", NAMESPACE), env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_status_lists_the_releases_deployments_autoscaler_and_pods(kube, release):
    deployments = {d["metadata"]["name"]: d for d in kube.get("deployments", "-n", NAMESPACE)["items"]}
    assert len(deployments) == 2, sorted(deployments)
    out = rtvi(kube, "status", "--output", "json")
    assert out.returncode == 0, out.stderr
    state = json.loads(out.stdout)
    assert {d["name"]: (d["ready"], d["desired"]) for d in state["deployments"]} == {
        name: (d["status"]["readyReplicas"], d["spec"]["replicas"]) for name, d in deployments.items()}
    hpa = kube.get("hpa", "-n", NAMESPACE)["items"]
    assert [h["name"] for h in state["autoscalers"]] == [h["metadata"]["name"] for h in hpa] != []
    assert state["autoscalers"][0]["min"] == hpa[0]["spec"]["minReplicas"]
    assert state["not_ready"] == [] and state["consumer_lag"] is None

    # A rollout whose new pod cannot be scheduled: that pod is listed with its reason.
    consumer = next(name for name in deployments if name.endswith("-consumer"))
    kube.kubectl("patch", "deployment", consumer, "-n", NAMESPACE, "--type=json", "-p", json.dumps(
        [{"op": "add", "path": "/spec/template/spec/nodeSelector", "value": {"rtvi-test/nowhere": "true"}}]))
    try:
        def unschedulable() -> bool:
            pods = kube.get("pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=consumer")["items"]
            return any(c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
                       for p in pods for c in p["status"].get("conditions", []))

        wait_for(unschedulable, 120, "the new consumer pod to be found unschedulable")
        text = rtvi(kube, "status")
        assert text.returncode == 0, text.stderr
        assert f"release {RELEASE} in namespace {NAMESPACE}" in text.stdout
        for name in deployments:
            assert f"deployment {name}:" in text.stdout
        assert "NOT READY" in text.stdout and "Unschedulable" in text.stdout, text.stdout
    finally:
        kube.kubectl("rollout", "undo", f"deployment/{consumer}", "-n", NAMESPACE)
        kube.kubectl("rollout", "status", f"deployment/{consumer}", "-n", NAMESPACE, "--timeout=120s", timeout=150)


def test_loadtest_runs_its_job_through_the_api_and_says_it_found_no_metrics(kube, release):
    out = rtvi(kube, "loadtest", "--streams", "2", "--fps", "5", "--duration", "5", "--wait-timeout-s", "240",
               timeout=600)
    jobs = kube.get("jobs", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=producer")["items"]
    assert len(jobs) == 1, out.stderr
    job = jobs[0]
    assert job["status"].get("succeeded") == 1, job["status"]
    assert f"created Job {job['metadata']['name']}" in out.stderr
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["RTVI_BOOTSTRAP_SERVERS"] == BROKER  # taken from the release's consumer Deployment
    # kwok runs no container: there is nothing to measure, and the command says so instead
    # of printing a summary of zero frames.
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout == ""
    consumers = kube.get("pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=consumer")["items"]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"rtvi loadtest: Job {job['metadata']['name']} succeeded, but no consumer metrics: "), last
    assert all(p["metadata"]["name"] in last for p in consumers) and "/metrics on port 9100" in last, last
