"""The chart on a real Kubernetes API server, installed the way the README says.

The control plane of the ``kube`` fixture (kube-apiserver, controller-manager, scheduler,
etcd, built from Kubernetes' source) validates and stores every object; the Deployment,
ReplicaSet, HPA and disruption controllers and the scheduler act on them; kwok's fake
nodes report the pods running. The Redpanda operator cannot be fetched here: its release is
the test stand-in chart (real values schema, CRDs through a pre-install hook as the real
chart's CRD Job does), which brings the real Topic CRD and a stand-in Redpanda CRD. KEDA's
ScaledObject/TriggerAuthentication and the Prometheus Operator's ServiceMonitor CRDs are
the real ones, from those projects' Go modules.
"""

from __future__ import annotations

import json
import shlex

import pytest
import yaml

from conftest import REPO
from support import kube_build
from support.kube_session import CPU_NODE, GPU_NODE
from support.stub_operator import CHART_NAME, CHART_REPOSITORY, CHART_VERSION
from test_chart import CHART, operator_chart  # noqa: F401  (fixture)
from test_streaming_pipeline import wait_for

pytestmark = pytest.mark.timeout(3600)  # the first test may wait for the cold build of the control plane

WAIT = ("--wait", "--timeout", "5m")


def readme_commands(section: str) -> list[list[str]]:
    """The commands of the bash block under a README heading, one argv each, comments dropped."""
    body = (REPO / "README.md").read_text().split(f"\n### {section}\n", 1)[1]
    block = body.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    return [argv for line in block.splitlines() if (argv := shlex.split(line, comments=True))]


def run_readme(kube, argv: list[str], operator_chart) -> None:  # noqa: F811
    """One README command against the test cluster; the operator chart's repository is
    unreachable, so its `--repo`/`--version` become the stub chart of the same version."""
    tool, *args = argv
    if tool == "helm" and CHART_NAME in args and "--repo" in args:
        assert args[args.index("--repo") + 1] == CHART_REPOSITORY and args[args.index("--version") + 1] == CHART_VERSION
        for flag in ("--repo", "--version"):
            at = args.index(flag)
            del args[at:at + 2]
        args[args.index(CHART_NAME)] = str(operator_chart)
        kube.helm(*args, cwd=REPO)
    elif tool == "helm":
        kube.helm(*args, cwd=REPO)
    else:
        assert tool == "kubectl", argv
        kube.kubectl(*args, timeout=660)


INSTALL = readme_commands("helm install to a cluster")
UNINSTALL = readme_commands("Uninstall")


@pytest.fixture(scope="module")
def operator(kube, operator_chart):  # noqa: F811
    """The README's first step, once per cluster (CRDs through the chart's hook), and its last."""
    operator_install = [argv for argv in INSTALL if "redpanda-controller" in argv]
    operator_uninstall = [argv for argv in UNINSTALL if "redpanda-controller" in argv]
    assert len(operator_install) == len(operator_uninstall) == 1
    run_readme(kube, operator_install[0], operator_chart)
    kube.kubectl("wait", "--for=condition=Established", "crd/redpandas.cluster.redpanda.com",
                 "crd/topics.cluster.redpanda.com", "--timeout=60s")
    yield
    run_readme(kube, operator_uninstall[0], operator_chart)


def uninstall(kube, release: str, namespace: str) -> None:
    """Upstream's order: the Topics while their operator runs, then the release (its Redpanda)."""
    kube.kubectl("delete", "topics.cluster.redpanda.com", "--namespace", namespace, "-l",
                 f"app.kubernetes.io/instance={release}", "--wait=true", "--timeout=120s", timeout=180)
    kube.helm("uninstall", release, "--namespace", namespace, *WAIT)
    assert_gone(kube, release, namespace)


def assert_gone(kube, release: str, namespace: str) -> None:
    def left() -> list[str]:
        return [f"{o['kind']}/{o['metadata']['name']}" for o in kube.get(
            "all,pdb,hpa,redpandas,topics", "--namespace", namespace, "-l", f"app.kubernetes.io/instance={release}"
        )["items"]]

    wait_for(lambda: not left(), 120, "the release's objects (pods included) to be gone")


def rolled_out(kube, namespace: str) -> dict[str, dict]:
    """Every Deployment of the namespace, asserted complete: all replicas updated and available."""
    deployments = {d["metadata"]["name"]: d for d in kube.get("deployments", "--namespace", namespace)["items"]}
    for name, d in deployments.items():
        status = d["status"]
        assert status.get("availableReplicas") == status.get("updatedReplicas") == d["spec"]["replicas"], (name,
                                                                                                           status)
    return deployments


def pods_of(kube, namespace: str, component: str, release: str = "") -> list[dict]:
    """The running pods of one component (of one release, if given)."""
    selector = f"app.kubernetes.io/component={component}" + (f",app.kubernetes.io/instance={release}" if release else "")
    return kube.get("pods", "--namespace", namespace, "-l", selector, "--field-selector=status.phase=Running")["items"]


def test_install_upgrade_rollback_uninstall_as_the_readme_says(kube, operator, operator_chart):  # noqa: F811
    release_install = [argv for argv in INSTALL if "redpanda-controller" not in argv]
    release_uninstall = [argv for argv in UNINSTALL if "redpanda-controller" not in argv]
    assert len(release_install) == 1 and len(release_uninstall) == 2, (INSTALL, UNINSTALL)
    install = release_install[0]
    release, namespace = install[install.index("--install") + 1], install[install.index("--namespace") + 1]
    kube.kubectl("create", "namespace", namespace)

    # Every object of the release, validated by the API server itself (schemas, defaults,
    # admission, strict field validation) before anything is created.
    manifest = kube.helm("template", release, str(CHART), "--namespace", namespace).stdout
    objects = [d for d in yaml.safe_load_all(manifest) if d]
    checked = kube.kubectl("apply", "--dry-run=server", "--validate=strict", "--namespace", namespace,
                           "-f", "-", stdin=manifest).stdout
    assert checked.count("(server dry run)") == len(objects), checked
    assert {"Redpanda", "Topic", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= {
        o["kind"] for o in objects}

    run_readme(kube, install, operator_chart)
    deployments = rolled_out(kube, namespace)
    assert len(deployments) == 2
    for component in ("inference", "consumer"):
        pods = pods_of(kube, namespace, component)
        assert pods and all(p["spec"]["nodeName"] == CPU_NODE for p in pods), component
        assert all(c["image"].startswith("registry.example.com/") for p in pods for c in p["spec"]["containers"])
    assert len(kube.get("topics", "--namespace", namespace)["items"]) == 2
    assert len(kube.get("redpandas", "--namespace", namespace)["items"]) == 1

    kube.helm("upgrade", release, str(CHART), "--namespace", namespace, "--reuse-values",
              "--set", "consumer.replicas=2", *WAIT)
    consumer = next(name for name in rolled_out(kube, namespace) if name.endswith("-consumer"))
    assert kube.get(f"deployment/{consumer}", "--namespace", namespace)["spec"]["replicas"] == 2

    kube.helm("rollback", release, "1", "--namespace", namespace, *WAIT)
    rolled_out(kube, namespace)
    assert kube.get(f"deployment/{consumer}", "--namespace", namespace)["spec"]["replicas"] == 1
    history = json.loads(kube.helm("history", release, "--namespace", namespace, "--output", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "superseded"), (3, "deployed")]

    for argv in release_uninstall:  # the operator's own uninstall, the README's last step, ends the module
        run_readme(kube, argv, operator_chart)
    assert_gone(kube, release, namespace)


def test_production_values_put_the_inference_pods_on_the_gpu_node(kube, operator):
    release = namespace = "prod"
    # KEDA's and the Prometheus Operator's CRDs, as those add-ons install them.
    kube.kubectl("apply", "--server-side", "-f", str(kube_build.crd_dir()))
    kube.kubectl("wait", "--for=condition=Established", "crd/scaledobjects.keda.sh",
                 "crd/servicemonitors.monitoring.coreos.com", "--timeout=60s")
    kube.helm("install", release, str(CHART), "--namespace", namespace, "--create-namespace",
              "-f", str(CHART / "values-production.yaml"), *WAIT)
    # The Deployment leaves its replica count to the HPA, whose controller raises it to minReplicas.
    wait_for(lambda: len(pods_of(kube, namespace, "inference")) == 2, 120, "the HPA's minReplicas (2) inference pods")
    rolled_out(kube, namespace)
    inference = pods_of(kube, namespace, "inference")
    assert {p["spec"]["nodeName"] for p in inference} == {GPU_NODE}
    consumers = pods_of(kube, namespace, "consumer")
    assert consumers and GPU_NODE not in {p["spec"]["nodeName"] for p in consumers}  # they do not tolerate it
    gpu = kube.get(f"node/{GPU_NODE}")["status"]["allocatable"]["nvidia.com/gpu"]
    assert int(gpu) >= len(inference)
    assert kube.get("scaledobjects", "--namespace", namespace)["items"]
    assert kube.get("servicemonitors", "--namespace", namespace)["items"]
    uninstall(kube, release, namespace)


def test_draining_a_node_is_not_blocked_by_the_disruption_budget(kube, operator):
    """kubectl drain evicts through the Eviction API, which honours PodDisruptionBudgets."""
    namespace = "drain"
    spare = "kwok-spare"
    kube.add_fake_node(spare)  # somewhere for the evicted pods to go

    def install(release: str, *values: str) -> None:
        kube.helm("install", release, str(CHART), "--namespace", namespace, "--create-namespace",
                  "--set", "redpanda.enabled=false",
                  "--set", "kafka.bootstrapServers=kafka.example:9092", *values, *WAIT)

    def drain(release: str, timeout_s: int):
        rolled_out(kube, namespace)
        node = pods_of(kube, namespace, "inference", release)[0]["spec"]["nodeName"]
        try:
            return kube.kubectl("drain", node, "--pod-selector", f"app.kubernetes.io/instance={release}",
                                "--ignore-daemonsets", "--delete-emptydir-data", f"--timeout={timeout_s}s",
                                check=False, timeout=timeout_s + 60)
        finally:
            kube.kubectl("uncordon", node)

    for replicas in (1, 2):
        release = f"drain{replicas}"
        install(release, "--set", f"inference.autoscaling.minReplicas={replicas}")
        wait_for(lambda: len(pods_of(kube, namespace, "inference", release)) == replicas, 120, f"{replicas} pods")
        assert kube.get("poddisruptionbudget", "--namespace", namespace, "-l",
                        f"app.kubernetes.io/instance={release}")["items"], "the chart's budget is in place"
        out = drain(release, 120)
        assert out.returncode == 0, f"{replicas} replica(s): " + "\n".join(out.stderr.splitlines()[-5:])
        kube.kubectl("rollout", "status", "deployment", "--namespace", namespace, "-l",
                     f"app.kubernetes.io/instance={release}", "--timeout=120s", timeout=150)
        kube.helm("uninstall", release, "--namespace", namespace, *WAIT)

    # The control: a budget of minAvailable 1 over a single replica (the chart's old one)
    # does block the same drain.
    release = "drain-control"
    install(release, "--set", "inference.pdb.enabled=false")
    kube.kubectl("create", "poddisruptionbudget", "strict", "--namespace", namespace, "--min-available=1",
                 "--selector", f"app.kubernetes.io/instance={release},app.kubernetes.io/component=inference")
    out = drain(release, 20)
    assert out.returncode != 0 and "violate the pod's disruption budget" in out.stderr, out.stdout + out.stderr
    kube.kubectl("delete", "poddisruptionbudget", "strict", "--namespace", namespace)
    kube.helm("uninstall", release, "--namespace", namespace, *WAIT)
    kube.kubectl("delete", "node", spare)
