"""The Helm chart, verified offline: real helm, real Kubernetes schemas, the Redpanda
CRD and chart schemas from ../shared/redpanda, and the rendered containers run for real.

No Kubernetes API server can run here, so what needs one (scheduling, probes by a real
kubelet, the operator reconciling) is out of reach; everything else is checked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import REPO
from support.tools import helm_binary

CHART = REPO / "charts" / "rtvi"
REDPANDA_DATA = REPO.parent / "shared" / "redpanda"
K8S_VERSIONS = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"]
VALUES = {"default": [], "dev": ["-f", str(CHART / "values-dev.yaml")],
          "production": ["-f", str(CHART / "values-production.yaml")]}
SERVING = 1


@pytest.fixture(scope="module")
def helm() -> str:
    return helm_binary()


@pytest.fixture(scope="module")
def chart(tmp_path_factory) -> Path:
    """A copy of the chart with a stub `operator` subchart: the Redpanda chart repository
    is unreachable here, so `helm dependency build` cannot fetch the real one."""
    copy = tmp_path_factory.mktemp("chart") / "rtvi"
    shutil.copytree(CHART, copy)
    stub = copy / "charts" / "operator"
    stub.mkdir(parents=True)
    dep = yaml.safe_load((CHART / "Chart.yaml").read_text())["dependencies"][0]
    (stub / "Chart.yaml").write_text(f"apiVersion: v2\nname: {dep['name']}\nversion: {dep['version'].replace('x', '1')}\n")
    return copy


def render(helm: str, chart: Path, *args: str) -> list[dict]:
    out = subprocess.run([helm, "template", "rtvi", str(chart), "--namespace", "video", *args],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def render_error(helm: str, chart: Path, *args: str) -> str:
    out = subprocess.run([helm, "template", "rtvi", str(chart), *args], capture_output=True, text=True)
    assert out.returncode != 0, "render should have failed"
    return out.stderr


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name_suffix: str) -> dict:
    matches = [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    assert len(matches) == 1, (kind, name_suffix, [d["metadata"]["name"] for d in by_kind(docs, kind)])
    return matches[0]


def merge(base: dict, override: dict) -> dict:
    """Helm's deep merge of values: maps merge, everything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


@pytest.mark.parametrize("name", VALUES)
def test_helm_lint_strict(helm, chart, name):
    out = subprocess.run([helm, "lint", "--strict", str(chart), *VALUES[name]], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


EXPECTED_KINDS = {
    "default": {"Deployment": 2, "Service": 3, "HorizontalPodAutoscaler": 1, "PodDisruptionBudget": 1,
                "Redpanda": 1, "Topic": 2},
    "dev": {"Deployment": 2, "Service": 3, "HorizontalPodAutoscaler": 1, "Redpanda": 1, "Topic": 2},
    "production": {"Deployment": 2, "Service": 3, "HorizontalPodAutoscaler": 1, "PodDisruptionBudget": 1,
                   "Redpanda": 1, "Topic": 2, "ScaledObject": 1, "ServiceMonitor": 2},
}


@pytest.mark.parametrize("name", VALUES)
def test_rendered_manifests_pass_kubernetes_schemas(helm, chart, name, tmp_path):
    docs = render(helm, chart, *VALUES[name], "--set", "producer.enabled=true")
    kinds = {k: len(by_kind(docs, k)) for k in {d["kind"] for d in docs}}
    for kind, count in {**EXPECTED_KINDS[name], "Job": 1}.items():
        assert kinds.get(kind) == count, f"{name}: expected {count} {kind}, rendered {kinds}"
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    validator = Path(sys.executable).with_name("kubernetes-validate")
    for version in K8S_VERSIONS:
        out = subprocess.run([str(validator), "--strict", "-k", version, str(manifest)], capture_output=True, text=True)
        assert out.returncode == 0, f"{name} @ {version}:\n{out.stdout}{out.stderr}"
        assert "ERROR" not in out.stdout, out.stdout


@pytest.mark.parametrize("name", VALUES)
def test_redpanda_resources_validate_against_operator_schemas(helm, chart, name):
    docs = render(helm, chart, *VALUES[name])
    cluster_schema = json.loads((REDPANDA_DATA / "redpanda-chart-values.schema.json").read_text())
    defaults = yaml.safe_load((REDPANDA_DATA / "redpanda-chart-values.yaml").read_text())
    redpanda = one(docs, "Redpanda", "-redpanda")
    assert redpanda["apiVersion"] == "cluster.redpanda.com/v1alpha2"
    # The operator renders the Redpanda chart with clusterSpec merged over the chart's defaults.
    jsonschema.validate(merge(defaults, redpanda["spec"]["clusterSpec"]), cluster_schema)
    crd = yaml.safe_load((REDPANDA_DATA / "cluster.redpanda.com_topics.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha2")
    assert version["served"]
    topic_schema = version["schema"]["openAPIV3Schema"]
    for topic in by_kind(docs, "Topic"):
        assert topic["apiVersion"] == f"{crd['spec']['group']}/v1alpha2"
        jsonschema.validate({k: v for k, v in topic.items() if k != "metadata"}, topic_schema)
        assert topic["spec"]["cluster"]["clusterRef"]["name"] == redpanda["metadata"]["name"]
        for key, value in topic["spec"]["additionalConfig"].items():
            assert value.lstrip("-").isdigit(), f"{key}={value!r}: Redpanda wants an integer (helm renders big numbers as floats)"
    assert {t["metadata"]["name"] for t in by_kind(docs, "Topic")} == {"frames", "predictions"}


def test_port_forward_listener_advertises_loopback(helm, chart):
    redpanda = one(render(helm, chart), "Redpanda", "-redpanda")["spec"]["clusterSpec"]
    listener = redpanda["listeners"]["kafka"]["external"]["portforward"]
    assert listener["enabled"] and listener["port"] == listener["advertisedPorts"][0] == 19094
    assert redpanda["external"]["addresses"] == ["127.0.0.1"]


def test_wiring(helm, chart):
    docs = render(helm, chart)
    inference = one(docs, "Deployment", "-inference")
    container = inference["spec"]["template"]["spec"]["containers"][0]
    port = container["ports"][0]["containerPort"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == port
        assert container[probe]["grpc"]["service"] == "inference.GRPCInferenceService"
    assert env_of(container)["RTVI_PORT"] == str(port)
    service = one(docs, "Service", "-inference")
    headless = one(docs, "Service", "-inference-headless")
    assert headless["spec"]["clusterIP"] == "None"
    for svc in (service, headless):
        grpc_port = next(p for p in svc["spec"]["ports"] if p["name"] == "grpc")
        assert grpc_port["port"] == port and grpc_port["targetPort"] == "grpc"
        assert svc["spec"]["selector"] == inference["spec"]["selector"]["matchLabels"]
    hpa = by_kind(docs, "HorizontalPodAutoscaler")[0]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                            "name": inference["metadata"]["name"]}
    assert "replicas" not in inference["spec"], "the HPA owns the replica count"
    consumer = one(docs, "Deployment", "-consumer")["spec"]["template"]["spec"]["containers"][0]
    env = env_of(consumer)
    assert env["RTVI_INFERENCE_URL"] == f"dns:///{headless['metadata']['name']}:{port}"
    redpanda = one(docs, "Redpanda", "-redpanda")
    assert env["RTVI_BOOTSTRAP_SERVERS"] == f"{redpanda['metadata']['name']}.video.svc.cluster.local:9093"
    assert env["RTVI_TOPIC"] == "frames" and env["RTVI_PREDICTIONS_TOPIC"] == "predictions"
    for doc in docs:
        pod = doc.get("spec", {}).get("template", {}).get("spec")
        for c in (pod or {}).get("containers", []):
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], doc["metadata"]["name"]
            assert c["resources"]["limits"]["memory"], doc["metadata"]["name"]
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert pod["securityContext"]["runAsNonRoot"] is True


def test_external_kafka_with_sasl_from_a_secret(helm, chart):
    docs = render(helm, chart, "--set", "redpanda.enabled=false", "--set", "kafka.bootstrapServers=kafka:9092",
                  "--set", "kafka.securityProtocol=SASL_SSL", "--set", "kafka.sasl.mechanism=SCRAM-SHA-512",
                  "--set", "kafka.sasl.username=rtvi", "--set", "kafka.sasl.passwordSecret.name=kafka-auth")
    assert not by_kind(docs, "Redpanda") and not by_kind(docs, "Topic")
    consumer = one(docs, "Deployment", "-consumer")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in consumer["env"]}
    assert env["RTVI_BOOTSTRAP_SERVERS"]["value"] == "kafka:9092"
    assert env["RTVI_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "kafka-auth", "key": "password"}
    assert "kafka.bootstrapServers is required" in render_error(helm, chart, "--set", "redpanda.enabled=false")


@pytest.mark.parametrize("args, message", [
    (["--set", "inference.port=grpc"], "inference.port: Invalid type. Expected: integer, given: string"),
    (["--set", "consumer.replicas=7"], "consumer.replicas (7) exceeds topics.frames.partitions (6)"),
    (["--set", "inference.precision=fp8"], 'inference.precision must be one of the following: "fp32", "bf16", "fp16"'),
    (["--set", "consumer.batchSize=32"], "consumer.batchSize (32) exceeds inference.maxBatchSize (16)"),
    (["--set", "inference.terminationGracePeriodSeconds=10"], "terminationGracePeriodSeconds must exceed"),
    (["--set", "consumer.keda.enabled=true", "--set", "consumer.keda.maxReplicaCount=20"],
     "consumer.keda.maxReplicaCount (20) exceeds topics.frames.partitions (6)"),
])
def test_wrong_values_fail_with_a_clear_message(helm, chart, args, message):
    assert message in render_error(helm, chart, *args)
    lint = subprocess.run([helm, "lint", "--strict", str(chart), *args], capture_output=True, text=True)
    # helm lint reports a template's `fail` as [INFO] with exit 0 (schema errors do fail
    # it); `helm install` and `helm template` do fail, and lint still shows the message.
    assert message in lint.stdout + lint.stderr


def test_skaffold_builds_the_chart_images_and_wires_them(helm, chart):
    config = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    assert config["apiVersion"].startswith("skaffold/v4beta")
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(artifacts) == {values["inference"]["image"]["repository"], values["consumer"]["image"]["repository"]}
    for artifact in artifacts.values():
        assert (REPO / artifact["context"] / artifact["docker"]["dockerfile"]).is_file()
    release = config["deploy"]["helm"]["releases"][0]
    assert (REPO / release["chartPath"]) == CHART
    for values_file in release["valuesFiles"]:
        assert (REPO / values_file).is_file()
    templates = release["setValueTemplates"]
    for component in ("inference", "consumer"):
        image = values[component]["image"]["repository"]
        key = image.replace("-", "_")
        assert templates[f"{component}.image.repository"] == f"{{{{.IMAGE_REPO_{key}}}}}"
        assert templates[f"{component}.image.tag"] == f"{{{{.IMAGE_TAG_{key}}}}}@{{{{.IMAGE_DIGEST_{key}}}}}"
    # The value paths skaffold sets exist and render into the containers.
    docs = render(helm, chart, *[a for k, v in {"inference.image.repository": "reg/inf", "inference.image.tag": "t1",
                                              "consumer.image.repository": "reg/con", "consumer.image.tag": "t2"}.items()
                                for a in ("--set", f"{k}={v}")])
    images = {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["image"]
              for d in by_kind(docs, "Deployment")}
    assert sorted(images.values()) == ["reg/con:t2", "reg/inf:t1"]
    forwards = {(p["resourceName"], p["port"]) for p in config["portForward"]}
    services = {d["metadata"]["name"]: {p["port"] for p in d["spec"]["ports"]} for d in by_kind(docs, "Service")}
    for name, port in forwards:
        assert port in services.get(name, set()), (name, port, services)
