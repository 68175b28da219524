"""The Helm chart and its install flow, verified offline: real helm, real Kubernetes schemas,
the Redpanda CRD and chart schemas from ../shared/redpanda, the operator chart's real values
schema (in a stub chart, tests/support/stub_operator), and skaffold's published schema.

What needs an API server (the install flow itself, server-side validation, scheduling) runs
elsewhere; the checks here are those that would have caught the install breaking: values the
operator chart rejects, and custom resources whose CRDs arrive through a hook of the same release.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import REPO
from support.stub_operator import CHART_NAME, CHART_REPOSITORY, CHART_VERSION, build_stub_operator
from support.tools import go_module_file, helm_binary

CHART = REPO / "charts" / "rtvi"
REDPANDA_DATA = REPO.parent / "shared" / "redpanda"
SKAFFOLD_SCHEMA = REPO.parent / "shared" / "skaffold" / "v4beta13.json"
K8S_VERSIONS = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"]
VALUES = {"default": [], "dev": ["-f", str(CHART / "values-dev.yaml")],
          "production": ["-f", str(CHART / "values-production.yaml")]}
HOOK = "helm.sh/hook"


@pytest.fixture(scope="module")
def helm() -> str:
    return helm_binary()


@pytest.fixture(scope="module")
def chart() -> Path:
    """The chart as users install it: it has no dependencies, so nothing needs fetching."""
    return CHART


@pytest.fixture(scope="module")
def operator_chart(tmp_path_factory) -> Path:
    return build_stub_operator(tmp_path_factory.mktemp("stub") / "operator")


def render(helm: str, chart: Path, *args: str, release: str = "rtvi", namespace: str = "video") -> list[dict]:
    out = subprocess.run([helm, "template", release, str(chart), "--namespace", namespace, *args],
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


def containers(docs: list[dict], kind: str, suffix: str) -> list[dict]:
    return one(docs, kind, suffix)["spec"]["template"]["spec"]["containers"]


def is_hook(doc: dict) -> bool:
    return HOOK in (doc["metadata"].get("annotations") or {})


def resources_needing_crds_of_the_same_release(docs: list[dict]) -> list[str]:
    """Objects of one release whose kind only exists once that same release created its CRD,
    in a hook or beside them in the manifest (crds/ folders are not rendered by `helm template`
    and are fine: Helm applies them first). Helm maps every object of the main manifest to an
    API resource before it runs any pre-install hook, so on a fresh cluster these fail with
    'no matches for kind' (helm/helm#8123, #10030). The stub operator's hook carries the CRDs
    themselves, where upstream's hook is a Job that applies them: same ordering, but visible."""
    crds = {(d["spec"]["group"], d["spec"]["names"]["kind"]): "a hook" if is_hook(d) else "the manifest"
            for d in docs if d["kind"] == "CustomResourceDefinition"}
    problems = []
    for doc in docs:
        group = doc["apiVersion"].rpartition("/")[0]
        source = crds.get((group, doc["kind"]))
        if source and not is_hook(doc):
            problems.append(f"{doc['kind']} {doc['metadata']['name']}: its CRD comes from {source} of the same release")
    return problems


def skaffold_config() -> dict:
    return yaml.safe_load((REPO / "skaffold.yaml").read_text())


def skaffold_releases() -> dict[str, dict]:
    return {r["name"]: r for r in skaffold_config()["deploy"]["helm"]["releases"]}


def set_args(values: dict[str, str]) -> list[str]:
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


# --- the chart renders, lints and validates ---------------------------------------------------------

@pytest.mark.parametrize("name", VALUES)
def test_helm_lint_strict(helm, chart, name):
    out = subprocess.run([helm, "lint", "--strict", str(chart), *VALUES[name]], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


EXPECTED_KINDS = {
    "default": {"Deployment": 2, "Service": 3, "HorizontalPodAutoscaler": 1, "PodDisruptionBudget": 1,
                "Redpanda": 1, "Topic": 2},
    "dev": {"Deployment": 2, "Service": 3, "HorizontalPodAutoscaler": 1, "Redpanda": 1, "Topic": 2},
    "production": {"Deployment": 2, "Service": 3, "HorizontalPodAutoscaler": 1, "PodDisruptionBudget": 1,
                   "Redpanda": 1, "Topic": 2, "ScaledObject": 1, "TriggerAuthentication": 1, "ServiceMonitor": 2},
}


@pytest.mark.parametrize("name", VALUES)
def test_rendered_manifests_pass_kubernetes_schemas(helm, chart, name, tmp_path):
    docs = render(helm, chart, *VALUES[name], "--set", "producer.enabled=true")
    kinds = {k: len(by_kind(docs, k)) for k in {d["kind"] for d in docs}}
    assert kinds == {**EXPECTED_KINDS[name], "Job": 1}, f"{name}: rendered {kinds}"
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
    # Resource names carry the release; the Kafka topic names are what the clients use.
    topics = {t["metadata"]["name"]: t["spec"]["overwriteTopicName"] for t in by_kind(docs, "Topic")}
    assert topics == {"rtvi-frames": "frames", "rtvi-predictions": "predictions"}
    consumer = env_of(containers(docs, "Deployment", "-consumer")[0])
    assert {consumer["RTVI_TOPIC"], consumer["RTVI_PREDICTIONS_TOPIC"]} == set(topics.values())


def test_two_releases_in_one_namespace_share_no_resource_name(helm, chart):
    first, second = (render(helm, chart, release=name) for name in ("cams-north", "cams-south"))
    names = [{(d["kind"], d["metadata"]["name"]) for d in docs} for docs in (first, second)]
    assert not names[0] & names[1], names[0] & names[1]
    groups = {env_of(containers(docs, "Deployment", "-consumer")[0])["RTVI_GROUP"] for docs in (first, second)}
    assert groups == {"cams-north-rtvi-consumer", "cams-south-rtvi-consumer"}


# --- the operator: its own release, its real values schema, CRDs before custom resources ---------

def test_the_chart_has_no_operator_inside(chart):
    """One cluster-wide operator, installed once before any rtvi release: nothing to lock, and no
    release can bring a second operator or CRDs that arrive after its own custom resources."""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    assert not meta.get("dependencies") and not (chart / "charts").exists()
    values = yaml.safe_load((chart / "values.yaml").read_text())
    assert "operator" not in values


def test_operator_values_are_checked_against_the_real_schema(helm, operator_chart):
    # The values skaffold.yaml (and the README) install the operator with pass the real schema ...
    operator = skaffold_releases()["redpanda-controller"]
    render(helm, operator_chart, *set_args(operator["setValues"]), release="redpanda-controller",
           namespace=operator["namespace"])
    # ... and the value that broke the old subchart layout fails, as with the real chart.
    out = subprocess.run([helm, "template", "x", str(operator_chart), "--set", "enabled=true"], capture_output=True,
                         text=True)
    assert out.returncode != 0 and "Additional property enabled is not allowed" in out.stderr, out.stderr


def test_the_operator_release_installs_the_crds_the_chart_needs(helm, chart, operator_chart):
    operator = skaffold_releases()["redpanda-controller"]
    hooks = render(helm, operator_chart, *set_args(operator["setValues"]), release="redpanda-controller")
    installed = {(d["spec"]["group"], d["spec"]["names"]["kind"])
                 for d in hooks if d["kind"] == "CustomResourceDefinition"}
    for name in VALUES:
        for doc in render(helm, chart, *VALUES[name]):
            group = doc["apiVersion"].rpartition("/")[0]
            if group.endswith("redpanda.com"):
                assert (group, doc["kind"]) in installed, (name, doc["kind"])


@pytest.mark.parametrize("release", ["rtvi", "redpanda-controller"])
def test_no_release_creates_custom_resources_whose_crds_it_installs_itself(helm, chart, operator_chart, release):
    config = skaffold_releases()[release]
    if release == "redpanda-controller":
        docs = render(helm, operator_chart, *set_args(config["setValues"]), release=release)
        assert any(is_hook(d) and d["kind"] == "CustomResourceDefinition" for d in docs), "the stub lost its CRD hook"
        assert resources_needing_crds_of_the_same_release(docs) == []
    else:
        for name in VALUES:
            assert resources_needing_crds_of_the_same_release(render(helm, chart, *VALUES[name])) == [], name


def test_stub_operator_folder_variant_needs_no_hook(helm, tmp_path):
    """The hook-free variant for API-server harnesses: the same CRDs from crds/, applied first."""
    folder = build_stub_operator(tmp_path / "operator", crds="folder")
    docs = render(helm, folder, "--set", "crds.enabled=true", "--include-crds", release="redpanda-controller")
    crds = {d["spec"]["names"]["kind"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert crds == {"Redpanda", "Topic"} and not any(is_hook(d) for d in docs)
    assert [d["metadata"]["name"] for d in by_kind(docs, "Deployment")] == ["redpanda-controller-operator"]


def test_the_ordering_check_catches_the_old_subchart_layout(helm, tmp_path):
    """The layout that broke every fresh install: the operator as a subchart with crds.enabled."""
    bundled = tmp_path / "rtvi"
    shutil.copytree(CHART, bundled)
    (bundled / "values.schema.json").unlink()  # rtvi's schema rightly refuses an `operator` key
    build_stub_operator(bundled / "charts" / CHART_NAME)
    meta = yaml.safe_load((bundled / "Chart.yaml").read_text())
    meta["dependencies"] = [{"name": CHART_NAME, "version": CHART_VERSION, "repository": CHART_REPOSITORY}]
    (bundled / "Chart.yaml").write_text(yaml.safe_dump(meta))
    problems = resources_needing_crds_of_the_same_release(render(helm, bundled, "--set", "operator.crds.enabled=true"))
    assert sorted(p.split(":")[0] for p in problems) == ["Redpanda rtvi-redpanda", "Topic rtvi-frames",
                                                          "Topic rtvi-predictions"], problems
    assert all("comes from a hook" in p for p in problems)


# --- skaffold ------------------------------------------------------------------------------------

def test_skaffold_yaml_validates_against_its_schema():
    schema = json.loads(SKAFFOLD_SCHEMA.read_text())
    config = skaffold_config()
    jsonschema.validate(config, schema)
    broken = merge(config, {"deploy": {"helm": {"releases": [{"name": "rtvi", "chart": "charts/rtvi"}]}}})
    with pytest.raises(jsonschema.ValidationError, match="'chart' was unexpected"):
        jsonschema.validate(broken, schema)


def deploy_order(releases: list[dict]) -> list[str]:
    """Skaffold's order: dependencies first, otherwise as listed (its helm dependency graph)."""
    order: list[str] = []
    by_name = {r["name"]: r for r in releases}

    def visit(name: str) -> None:
        if name not in order:
            for dep in by_name[name].get("dependsOn", []):
                visit(dep)
            order.append(name)

    for release in releases:
        visit(release["name"])
    return order


def test_skaffold_installs_the_operator_first_and_deletes_it_last():
    releases = skaffold_config()["deploy"]["helm"]["releases"]
    assert deploy_order(releases) == ["redpanda-controller", "rtvi"]
    assert [r["name"] for r in releases] == ["rtvi", "redpanda-controller"], "skaffold deletes in list order"
    operator = skaffold_releases()["redpanda-controller"]
    assert (operator["repo"], operator["remoteChart"], operator["version"]) == (CHART_REPOSITORY, CHART_NAME,
                                                                                 CHART_VERSION)
    assert operator["setValues"] == {"crds.enabled": "true"} and operator["wait"] is True
    assert skaffold_releases()["rtvi"]["wait"] is True


def test_skaffold_builds_the_chart_images_and_wires_them(helm, chart):
    config = skaffold_config()
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(artifacts) == {values["inference"]["image"]["repository"], values["consumer"]["image"]["repository"]}
    for artifact in artifacts.values():
        assert (REPO / artifact["context"] / artifact["docker"]["dockerfile"]).is_file()
    release = skaffold_releases()["rtvi"]
    assert (REPO / release["chartPath"]) == CHART
    for values_file in release["valuesFiles"]:
        assert (REPO / values_file).is_file()
    for profile in config["profiles"]:
        for patch in profile.get("patches", []):
            index = int(patch["path"].split("/")[4])
            assert config["deploy"]["helm"]["releases"][index]["name"] == "rtvi", patch
    templates = release["setValueTemplates"]
    for component in ("inference", "consumer"):
        key = values[component]["image"]["repository"].replace("-", "_")
        assert templates[f"{component}.image.repository"] == f"{{{{.IMAGE_REPO_{key}}}}}"
        assert templates[f"{component}.image.tag"] == f"{{{{.IMAGE_TAG_{key}}}}}@{{{{.IMAGE_DIGEST_{key}}}}}"
    # The value paths skaffold sets exist and render into the containers.
    docs = render(helm, chart, *release_values(release), *set_args({
        "inference.image.repository": "reg/inf", "inference.image.tag": "t1",
        "consumer.image.repository": "reg/con", "consumer.image.tag": "t2"}), namespace=release["namespace"])
    images = {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["image"]
              for d in by_kind(docs, "Deployment")}
    assert sorted(images.values()) == ["reg/con:t2", "reg/inf:t1"]
    services = {d["metadata"]["name"]: {p["port"] for p in d["spec"]["ports"]} for d in by_kind(docs, "Service")}
    redpanda = one(docs, "Redpanda", "-redpanda")
    for forward in config["portForward"]:
        assert forward["namespace"] == release["namespace"]
        if forward["resourceType"] == "service":
            assert forward["port"] in services.get(forward["resourceName"], set()), (forward, services)
        else:  # the broker pod's port-forward listener
            listener = redpanda["spec"]["clusterSpec"]["listeners"]["kafka"]["external"]["default"]
            assert forward["resourceName"] == f"{redpanda['metadata']['name']}-0"
            assert forward["port"] == listener["port"]


def release_values(release: dict) -> list[str]:
    return [arg for path in release.get("valuesFiles", []) for arg in ("-f", str(REPO / path))]


# --- networking: the port-forward listener -----------------------------------------------------------

def advertised_kafka_listeners(cluster_spec: dict) -> dict[str, dict]:
    """The external Kafka listeners the Redpanda chart advertises: every one it has, enabled or not."""
    defaults = yaml.safe_load((REDPANDA_DATA / "redpanda-chart-values.yaml").read_text())
    return merge(defaults, cluster_spec)["listeners"]["kafka"]["external"]


def test_port_forward_listener_is_the_only_advertised_one(helm, chart):
    spec = one(render(helm, chart), "Redpanda", "-redpanda")["spec"]["clusterSpec"]
    listeners = advertised_kafka_listeners(spec)
    assert list(listeners) == ["default"], listeners
    assert listeners["default"]["port"] == 19094 and listeners["default"]["advertisedPorts"] == [19094]
    assert spec["external"] == {"enabled": True, "service": {"enabled": False}, "addresses": ["127.0.0.1"]}


def test_port_forward_settings_stay_out_of_the_base_values(helm, chart):
    assert "external" not in yaml.safe_load((chart / "values.yaml").read_text())["redpanda"]["clusterSpec"]
    spec = one(render(helm, chart, *VALUES["production"]), "Redpanda", "-redpanda")["spec"]["clusterSpec"]
    assert spec["external"] == {"enabled": False} and "listeners" not in spec
    assert "127.0.0.1" not in json.dumps(spec)


# --- wiring ----------------------------------------------------------------------------------------

def test_wiring(helm, chart):
    docs = render(helm, chart)
    inference = one(docs, "Deployment", "-inference")
    container = inference["spec"]["template"]["spec"]["containers"][0]
    port = container["ports"][0]["containerPort"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == port
        assert container[probe]["timeoutSeconds"] >= 5, probe
    # The serving contract: readiness service for startup and readiness, "liveness" for liveness.
    assert container["startupProbe"]["grpc"]["service"] == "inference.GRPCInferenceService"
    assert container["readinessProbe"]["grpc"]["service"] == "inference.GRPCInferenceService"
    assert container["livenessProbe"]["grpc"]["service"] == "liveness"
    env = env_of(container)
    assert env["RTVI_PORT"] == str(port)
    assert env["RTVI_PRECISION"] == "auto" and env["RTVI_ENGINE"] == "auto"
    assert "RTVI_LIVENESS_TIMEOUT_S" not in env
    service = one(docs, "Service", "-inference")
    headless = one(docs, "Service", "-inference-headless")
    assert headless["spec"]["clusterIP"] == "None"
    # The consumer follows the headless Service's DNS answers: they must list Ready pods only.
    assert not headless["spec"].get("publishNotReadyAddresses")
    for svc in (service, headless):
        grpc_port = next(p for p in svc["spec"]["ports"] if p["name"] == "grpc")
        assert grpc_port["port"] == port and grpc_port["targetPort"] == "grpc"
        assert svc["spec"]["selector"] == inference["spec"]["selector"]["matchLabels"]
    hpa = by_kind(docs, "HorizontalPodAutoscaler")[0]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                            "name": inference["metadata"]["name"]}
    assert "replicas" not in inference["spec"], "the HPA owns the replica count"
    consumer = containers(docs, "Deployment", "-consumer")[0]
    env = env_of(consumer)
    assert env["RTVI_INFERENCE_URL"] == f"dns:///{headless['metadata']['name']}:{port}"
    redpanda = one(docs, "Redpanda", "-redpanda")
    assert env["RTVI_BOOTSTRAP_SERVERS"] == f"{redpanda['metadata']['name']}.video.svc.cluster.local:9093"
    assert "RTVI_SECURITY_PROTOCOL" not in env, "TLS is off in the default clusterSpec"
    assert env["RTVI_GROUP"] == "rtvi-consumer"
    # The real-time contract: HTTP health on the metrics port.
    metrics_port = next(p for p in consumer["ports"] if p["name"] == "metrics")
    assert metrics_port["containerPort"] == int(env["RTVI_METRICS_PORT"])
    assert consumer["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert consumer["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    for doc in docs:
        pod = doc.get("spec", {}).get("template", {}).get("spec")
        for c in (pod or {}).get("containers", []):
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], doc["metadata"]["name"]
            assert c["resources"]["limits"]["memory"], doc["metadata"]["name"]
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert pod["securityContext"]["runAsNonRoot"] is True


def test_events_topic_and_the_consumers_event_settings(helm, chart):
    from rtvi.settings import env_name
    from rtvi.streaming.consumer.config import ConsumerConfig

    docs = render(helm, chart)
    assert "RTVI_EVENTS_TOPIC" not in env_of(containers(docs, "Deployment", "-consumer")[0]), "off by default"
    docs = render(helm, chart, "--set", "topics.events.enabled=true", "--set", "consumer.events.minScore=2.5",
                  "--set", "consumer.events.minFrames=5")
    topics = {t["metadata"]["name"]: t["spec"] for t in by_kind(docs, "Topic")}
    assert topics["rtvi-events"]["overwriteTopicName"] == "events"
    assert topics["rtvi-events"]["additionalConfig"]["retention.ms"] == "604800000"
    env = env_of(containers(docs, "Deployment", "-consumer")[0])
    assert (env["RTVI_EVENTS_TOPIC"], env["RTVI_EVENT_MIN_FRAMES"], env["RTVI_EVENT_MIN_SCORE"],
            env["RTVI_EVENT_SILENCE_S"]) == ("events", "5", "2.5", "10")
    # Every variable the chart gives the consumer is one of its settings.
    settings = {env_name(f) for f in ConsumerConfig.__dataclass_fields__}
    assert {name for name in env if name.startswith("RTVI_")} <= settings, set(env) - settings


def test_liveness_timeout_is_passed_when_set(helm, chart):
    docs = render(helm, chart, "--set", "inference.livenessTimeoutSeconds=45")
    container = containers(docs, "Deployment", "-inference")[0]
    assert env_of(container)["RTVI_LIVENESS_TIMEOUT_S"] == "45"


def threads_env(helm, chart, *args: str) -> dict:
    container = containers(render(helm, chart, *args), "Deployment", "-inference")[0]
    return next(e for e in container["env"] if e["name"] == "RTVI_THREADS")


def test_threads_follow_the_cpu_request(helm, chart):
    # One instance: the kubelet's own view of the request (rounded up), whatever LimitRanges add.
    assert threads_env(helm, chart)["valueFrom"] == {"resourceFieldRef": {
        "containerName": "inference", "resource": "requests.cpu", "divisor": "1"}}
    # Several instances share the request.
    cases = {("2", "4"): "2", ("2", "3"): "1", ("4", "4000m"): "1", ("3", "7"): "2", ("8", "2"): "1"}
    for (instances, cpu), threads in cases.items():
        env = threads_env(helm, chart, "--set", f"inference.instances={instances}",
                          "--set-string", f"inference.resources.requests.cpu={cpu}")
        assert env == {"name": "RTVI_THREADS", "value": threads}, (instances, cpu, env)
    assert threads_env(helm, chart, "--set", "inference.threads=3") == {"name": "RTVI_THREADS", "value": "3"}


def test_the_hpa_takes_a_target_above_the_request_and_its_behavior(helm, chart):
    """The node tests' autoscaler: pods limited above their request may be targeted over 100%."""
    behavior = {"scaleUp": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 1,
                                                                            "periodSeconds": 15}]},
                "scaleDown": {"stabilizationWindowSeconds": 15, "policies": [{"type": "Pods", "value": 1,
                                                                               "periodSeconds": 15}]}}
    docs = render(helm, chart, "--set", "inference.autoscaling.targetCPUUtilizationPercentage=150", "--set",
                  "inference.resources.requests.cpu=300m", "--set", "inference.resources.limits.cpu=1",
                  "--set-json", f"inference.autoscaling.behavior={json.dumps(behavior)}")
    hpa = by_kind(docs, "HorizontalPodAutoscaler")[0]
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 150}}}]
    assert hpa["spec"]["behavior"] == behavior


def test_the_pdb_never_blocks_a_drain(helm, chart):
    for name in ("default", "production"):
        pdb = by_kind(render(helm, chart, *VALUES[name]), "PodDisruptionBudget")[0]["spec"]
        assert pdb == {"maxUnavailable": 1, "selector": pdb["selector"]}, pdb
    assert "maxUnavailable" in render_error(helm, chart, "--set", "inference.pdb.maxUnavailable=0")


# --- Kafka security: the variables rtvi's KafkaConfig reads ------------------------------------------

KAFKA_SECRET_ENV = {"RTVI_SECURITY_PROTOCOL", "RTVI_SASL_MECHANISM", "RTVI_SASL_USERNAME", "RTVI_SASL_PASSWORD",
                    "RTVI_SSL_CA_LOCATION"}


def kafka_clients(docs: list[dict]) -> list[tuple[dict, dict]]:
    """(pod spec, container) of the consumer Deployment and the producer Job."""
    pods = [one(docs, "Deployment", "-consumer"), by_kind(docs, "Job")[0]]
    return [(p["spec"]["template"]["spec"], p["spec"]["template"]["spec"]["containers"][0]) for p in pods]


def assert_kafka_security(pod: dict, container: dict, protocol: str, sasl: tuple | None, ca: tuple | None) -> None:
    env = {e["name"]: e for e in container["env"] if e["name"] in KAFKA_SECRET_ENV}
    expected = {"RTVI_SECURITY_PROTOCOL"}
    assert env["RTVI_SECURITY_PROTOCOL"]["value"] == protocol
    if sasl:
        mechanism, username, secret, key = sasl
        expected |= {"RTVI_SASL_MECHANISM", "RTVI_SASL_USERNAME", "RTVI_SASL_PASSWORD"}
        assert env["RTVI_SASL_MECHANISM"]["value"] == mechanism
        assert env["RTVI_SASL_USERNAME"]["value"] == username
        assert env["RTVI_SASL_PASSWORD"] == {"name": "RTVI_SASL_PASSWORD",
                                             "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
    if ca:
        secret, key = ca
        expected.add("RTVI_SSL_CA_LOCATION")
        location = Path(env["RTVI_SSL_CA_LOCATION"]["value"])
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(location.parent))
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert volume["secret"]["secretName"] == secret
        assert {"key": key, "path": location.name} in volume["secret"]["items"], volume
    assert set(env) == expected, set(env)


def test_kafka_variables_are_those_kafka_config_reads():
    from rtvi.settings import env_name
    from rtvi.streaming.kafka_config import KafkaConfig
    fields = {env_name(f) for f in KafkaConfig.__dataclass_fields__}
    assert KAFKA_SECRET_ENV | {"RTVI_BOOTSTRAP_SERVERS", "RTVI_MAX_FRAME_BYTES"} <= fields


def test_external_kafka_with_sasl_and_tls(helm, chart):
    docs = render(helm, chart, "--set", "producer.enabled=true", "--set", "consumer.keda.enabled=true", *set_args({
        "redpanda.enabled": "false", "kafka.bootstrapServers": "kafka:9093", "kafka.securityProtocol": "SASL_SSL",
        "kafka.sasl.mechanism": "SCRAM-SHA-512", "kafka.sasl.username": "rtvi",
        "kafka.sasl.passwordSecret.name": "kafka-auth", "kafka.tls.caSecret.name": "kafka-ca",
        "kafka.tls.caSecret.key": "root.pem"}))
    assert not by_kind(docs, "Redpanda") and not by_kind(docs, "Topic")
    for pod, container in kafka_clients(docs):
        assert env_of(container)["RTVI_BOOTSTRAP_SERVERS"] == "kafka:9093"
        assert_kafka_security(pod, container, "SASL_SSL", ("SCRAM-SHA-512", "rtvi", "kafka-auth", "password"),
                              ("kafka-ca", "root.pem"))
    trigger = by_kind(docs, "ScaledObject")[0]["spec"]["triggers"][0]
    assert trigger["metadata"]["sasl"] == "scram_sha512" and trigger["metadata"]["tls"] == "enable"
    auth = by_kind(docs, "TriggerAuthentication")[0]
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    assert auth["spec"]["env"] == [{"parameter": "username", "name": "RTVI_SASL_USERNAME", "containerName": "consumer"}]
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", "name": "kafka-auth", "key": "password"},
                                               {"parameter": "ca", "name": "kafka-ca", "key": "root.pem"}]
    assert "kafka.bootstrapServers is required" in render_error(helm, chart, "--set", "redpanda.enabled=false")


def test_external_kafka_plaintext_and_tls_only(helm, chart):
    base = {"redpanda.enabled": "false", "kafka.bootstrapServers": "kafka:9092", "producer.enabled": "true"}
    docs = render(helm, chart, *set_args(base))
    for _, container in kafka_clients(docs):
        assert not KAFKA_SECRET_ENV & set(env_of(container)), "PLAINTEXT is the clients' default"
        assert "volumeMounts" not in container
    docs = render(helm, chart, *set_args({**base, "kafka.securityProtocol": "SSL", "kafka.tls.caSecret.name": "ca"}))
    for pod, container in kafka_clients(docs):
        assert_kafka_security(pod, container, "SSL", None, ("ca", "ca.crt"))


def test_redpanda_tls_and_sasl_switch_every_client(helm, chart):
    secure = {"redpanda.clusterSpec.tls.enabled": "true", "redpanda.clusterSpec.auth.sasl.enabled": "true",
              "kafka.sasl.username": "rtvi", "kafka.sasl.passwordSecret.name": "rtvi-user",
              "producer.enabled": "true", "consumer.keda.enabled": "true"}
    docs = render(helm, chart, *set_args(secure))
    for pod, container in kafka_clients(docs):
        assert_kafka_security(pod, container, "SASL_SSL", ("SCRAM-SHA-512", "rtvi", "rtvi-user", "password"),
                              ("rtvi-redpanda-default-cert", "ca.crt"))
    trigger = by_kind(docs, "ScaledObject")[0]["spec"]["triggers"][0]
    assert trigger["metadata"]["tls"] == "enable" and trigger["metadata"]["sasl"] == "scram_sha512"
    auth = by_kind(docs, "TriggerAuthentication")[0]["spec"]
    assert {r["parameter"] for r in auth["secretTargetRef"]} == {"password", "ca"}
    # The production example turns TLS on alone: SSL with the broker certificate's CA.
    docs = render(helm, chart, *VALUES["production"], "--set", "producer.enabled=true")
    for pod, container in kafka_clients(docs):
        assert_kafka_security(pod, container, "SSL", None, ("rtvi-redpanda-default-cert", "ca.crt"))
    # A clusterSpec without tls gets the Redpanda chart's default: TLS on.
    docs = render(helm, chart, "--set", "redpanda.clusterSpec.tls=null", "--set", "producer.enabled=true")
    for pod, container in kafka_clients(docs):
        assert env_of(container)["RTVI_SECURITY_PROTOCOL"] == "SSL"
    # A certificate from the user's own Secret without a CA in it: trust its tls.crt, as the chart's rpk does.
    docs = render(helm, chart, *set_args({"redpanda.clusterSpec.tls.enabled": "true",
                                          "redpanda.clusterSpec.tls.certs.default.secretRef.name": "broker-tls",
                                          "redpanda.clusterSpec.tls.certs.default.caEnabled": "false"}))
    pod = one(docs, "Deployment", "-consumer")["spec"]["template"]["spec"]
    assert_kafka_security(pod, pod["containers"][0], "SSL", None, ("broker-tls", "tls.crt"))


# --- wrong values fail at render, with one clear line --------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--set", "inference.port=grpc"], "inference.port: Invalid type. Expected: integer, given: string"),
    (["--set", "consumer.replicas=7"], "consumer.replicas (7) exceeds topics.frames.partitions (6)"),
    (["--set", "inference.precision=fp8"],
     'inference.precision must be one of the following: "auto", "fp32", "bf16", "fp16"'),
    (["--set", "inference.engine=tensorrt"], "inference.engine must be one of the following"),
    (["--set", "consumer.batchSize=32"], "consumer.batchSize (32) exceeds inference.maxBatchSize (16)"),
    (["--set", "inference.terminationGracePeriodSeconds=10"], "terminationGracePeriodSeconds must exceed"),
    (["--set", "consumer.keda.enabled=true", "--set", "consumer.keda.maxReplicaCount=20"],
     "consumer.keda.maxReplicaCount (20) exceeds topics.frames.partitions (6)"),
    (["--set", "operator.enabled=true"], "Additional property operator is not allowed"),
    (["--set", "redpanda.clusterSpec.statefulset.replicas=3"], "redpanda.portForward reaches one broker"),
    (["--set", "redpanda.clusterSpec.auth.sasl.enabled=true"], "kafka.sasl.username is required when Kafka uses SASL"),
    (["--set", "redpanda.enabled=false", "--set", "kafka.bootstrapServers=k:9092", "--set",
      "kafka.securityProtocol=SASL_SSL"], "kafka.securityProtocol SASL_SSL needs kafka.sasl.mechanism"),
    (["--set", "redpanda.enabled=false", "--set", "kafka.bootstrapServers=k:9092", "--set",
      "kafka.sasl.mechanism=PLAIN"], "kafka.sasl.mechanism is set but kafka.securityProtocol PLAINTEXT has no SASL"),
    (["--set", "kafka.sasl.mechanism=PLAIN"], "kafka.sasl.mechanism is set but the chart's Redpanda has SASL off"),
    (["--set", "inference.instances=2", "--set", "inference.resources.requests.cpu=0", "--set",
      "inference.autoscaling.enabled=false"], "set that request, or set inference.threads"),
    (["--set", "inference.resources.requests.cpu=0"],
     "inference.autoscaling targets CPU utilization, a percentage of inference.resources.requests.cpu"),
])
def test_wrong_values_fail_with_a_clear_message(helm, chart, args, message):
    assert_render_fails(helm, chart, args, message)


def assert_render_fails(helm: str, chart: Path, args: list[str], message: str) -> None:
    assert message in render_error(helm, chart, *args)
    lint = subprocess.run([helm, "lint", "--strict", str(chart), *args], capture_output=True, text=True)
    # helm lint reports a template's `fail` as [INFO] with exit 0 (schema errors do fail
    # it); `helm install` and `helm template` do fail, and lint still shows the message.
    assert message in lint.stdout + lint.stderr


# --- the standalone producer Job ----------------------------------------------------------------

def test_standalone_producer_job_matches_the_readme_release(helm, chart, tmp_path):
    """k8s/producer-job.yaml targets release "rtvi" in whatever namespace it is created in."""
    job = yaml.safe_load((REPO / "k8s" / "producer-job.yaml").read_text())
    assert "namespace" not in job["metadata"], "kubectl -n decides the namespace"
    docs = render(helm, chart, "--set", "producer.enabled=true", namespace="rtvi")
    chart_job = by_kind(docs, "Job")[0]
    container = job["spec"]["template"]["spec"]["containers"][0]
    chart_container = chart_job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == chart_container["image"], "the chart's default image and tag"
    assert container["args"] == chart_container["args"]
    env, chart_env = env_of(container), env_of(chart_container)
    service, _, port = env["RTVI_BOOTSTRAP_SERVERS"].partition(":")
    chart_host, _, chart_port = chart_env["RTVI_BOOTSTRAP_SERVERS"].partition(":")
    assert chart_host == f"{service}.rtvi.svc.cluster.local" and port == chart_port
    assert env["RTVI_TOPIC"] == chart_env["RTVI_TOPIC"]
    for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"):
        assert job["metadata"]["labels"][key] == chart_job["metadata"]["labels"][key]
    validator = Path(sys.executable).with_name("kubernetes-validate")
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump({**job, "metadata": {**job["metadata"], "name": "x"}}))
    out = subprocess.run([str(validator), "--strict", "-k", K8S_VERSIONS[-1], str(manifest)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_readme_install_commands_match_skaffold():
    """The README's operator command installs what skaffold installs, and the uninstall goes in
    the upstream order: the release's resources first, the operator last."""
    readme = (REPO / "README.md").read_text()
    operator = skaffold_releases()["redpanda-controller"]
    install = re.search(r"helm upgrade --install redpanda-controller .*?(?=\n\n|\n```)", readme, re.S).group(0)
    for fragment in (f"--repo {CHART_REPOSITORY}", f"--version {CHART_VERSION}", f"--namespace {operator['namespace']}",
                     "--set crds.enabled=true", "--wait", " operator "):
        assert fragment in install, (fragment, install)
    rtvi = skaffold_releases()["rtvi"]
    assert re.search(rf"helm upgrade --install rtvi charts/rtvi --namespace {rtvi['namespace']} ", readme)
    release = readme.index(f"helm uninstall rtvi --namespace {rtvi['namespace']} --wait")
    topics = readme.index(f"kubectl -n {rtvi['namespace']} delete topics.cluster.redpanda.com")
    controller = readme.index(f"helm uninstall redpanda-controller --namespace {operator['namespace']}")
    assert topics < release < controller, "topics, then the release, then the operator"


# --- the optional view (`rtvi view`) -----------------------------------------------------------------

def test_the_view_is_off_by_default(helm, chart):
    docs = render(helm, chart)
    assert not [d for d in docs if d["metadata"]["name"].endswith("-view")]


def test_the_view_runs_the_consumer_image_behind_a_cluster_ip_service(helm, chart, tmp_path):
    from rtvi.settings import env_name
    from rtvi.view.config import ViewConfig

    docs = render(helm, chart, "--set", "view.enabled=true", "--set", "consumer.image.tag=t1")
    view = one(docs, "Deployment", "-view")
    pod = view["spec"]["template"]["spec"]
    container = pod["containers"][0]
    consumer = containers(docs, "Deployment", "-consumer")[0]
    assert container["image"] == consumer["image"] == "rtvi-consumer:t1" and container["args"] == ["view"]
    env, consumer_env = env_of(container), env_of(consumer)
    assert set(env) <= {env_name(f) for f in ViewConfig.__dataclass_fields__}, "every variable is a ViewConfig field"
    for name in ("RTVI_BOOTSTRAP_SERVERS", "RTVI_TOPIC", "RTVI_PREDICTIONS_TOPIC", "RTVI_MAX_FRAME_BYTES"):
        assert env[name] == consumer_env[name], name
    assert env["RTVI_GROUP"] == "rtvi-view" != consumer_env["RTVI_GROUP"]
    assert env["RTVI_HOST"] == "0.0.0.0"
    port = next(p for p in container["ports"] if p["name"] == "http")
    assert port["containerPort"] == int(env["RTVI_PORT"]) == 8080
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    service = one(docs, "Service", "-view")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == view["spec"]["selector"]["matchLabels"]
    assert view["spec"]["selector"]["matchLabels"] != one(docs, "Deployment", "-consumer")["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    manifest = tmp_path / "view.yaml"
    manifest.write_text(yaml.safe_dump_all([view, service]))
    validator = Path(sys.executable).with_name("kubernetes-validate")
    for version in (K8S_VERSIONS[0], K8S_VERSIONS[-1]):
        out = subprocess.run([str(validator), "--strict", "-k", version, str(manifest)], capture_output=True, text=True)
        assert out.returncode == 0 and "ERROR" not in out.stdout, f"{version}:\n{out.stdout}{out.stderr}"


def test_the_view_settings_reach_its_variables(helm, chart):
    docs = render(helm, chart, *set_args({"view.enabled": "true", "view.port": "9090", "view.group": "wall",
                                          "view.staleAfterSeconds": "12", "view.updateFps": "2",
                                          "view.frameBufferMb": "32"}))
    env = env_of(containers(docs, "Deployment", "-view")[0])
    assert {k: env[k] for k in ("RTVI_PORT", "RTVI_GROUP", "RTVI_STALE_AFTER_S", "RTVI_UPDATE_FPS",
                                "RTVI_FRAME_BUFFER_MB")} == {"RTVI_PORT": "9090", "RTVI_GROUP": "wall",
                                                             "RTVI_STALE_AFTER_S": "12", "RTVI_UPDATE_FPS": "2",
                                                             "RTVI_FRAME_BUFFER_MB": "32"}
    assert one(docs, "Service", "-view")["spec"]["ports"][0]["port"] == 9090


def test_the_view_reaches_kafka_as_the_consumer_does(helm, chart):
    docs = render(helm, chart, *set_args({
        "view.enabled": "true", "redpanda.enabled": "false", "kafka.bootstrapServers": "kafka:9093",
        "kafka.securityProtocol": "SASL_SSL", "kafka.sasl.mechanism": "SCRAM-SHA-512", "kafka.sasl.username": "rtvi",
        "kafka.sasl.passwordSecret.name": "kafka-auth", "kafka.tls.caSecret.name": "kafka-ca"}))
    view = one(docs, "Deployment", "-view")["spec"]["template"]["spec"]
    assert_kafka_security(view, view["containers"][0], "SASL_SSL", ("SCRAM-SHA-512", "rtvi", "kafka-auth", "password"),
                          ("kafka-ca", "ca.crt"))


@pytest.mark.parametrize("args, message", [
    (["--set", "view.updateFps=0"], "view.updateFps"),
    (["--set", "view.port=http"], "view.port: Invalid type. Expected: integer, given: string"),
    (["--set", "view.colour=red"], "Additional property colour is not allowed"),
])
def test_wrong_view_values_fail_with_a_clear_message(helm, chart, args, message):
    assert message in render_error(helm, chart, *args)
# --- mutual TLS between the consumers and the inference server ------------------------------------

CERT_MANAGER_MODULE = "github.com/cert-manager/cert-manager@v1.21.2"
CERTIFICATE_CRD = "deploy/crds/cert-manager.io_certificates.yaml"
TLS_MODES = {
    "existing-secrets": {"inference.tls.enabled": "true", "inference.tls.server.secretName": "inference-tls",
                         "inference.tls.client.secretName": "consumer-tls"},
    "cert-manager": {"inference.tls.enabled": "true", "inference.tls.certManager.enabled": "true",
                     "inference.tls.certManager.issuerRef.name": "rtvi-ca", "inference.tls.certManager.issuerRef.kind":
                     "ClusterIssuer"},
}


@pytest.fixture(scope="module")
def certificate_schema() -> dict:
    """The openAPIV3Schema of cert-manager's own Certificate CRD (cert-manager.io/v1), from its Go module."""
    path = go_module_file(CERT_MANAGER_MODULE, CERTIFICATE_CRD)
    if path is None:
        pytest.skip("go not found: cert-manager's CRD comes from its Go module")
    crd = yaml.safe_load(path.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    assert version["served"] and version["storage"]
    return version["schema"]["openAPIV3Schema"]


def unknown_fields(value, schema: dict, path: str = "") -> list[str]:
    """Fields the schema does not declare: the API server would prune them silently (a typo in
    a template), so they are checked as `kubectl apply --validate=strict` would."""
    if isinstance(value, dict) and "properties" in schema:
        return [problem for key, item in value.items()
                for problem in ([f"{path}.{key}"] if key not in schema["properties"]
                                else unknown_fields(item, schema["properties"][key], f"{path}.{key}"))]
    if isinstance(value, list) and "items" in schema:
        return [problem for i, item in enumerate(value) for problem in unknown_fields(item, schema["items"], f"{path}[{i}]")]
    return []


def mounted_secret(pod: dict, container: dict, path: str) -> str:
    """The Secret a file path in a container comes from (a whole-Secret mount: rotations arrive)."""
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    assert "subPath" not in mount, "a subPath mount never sees a rotated Secret"
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    return volume["secret"]["secretName"]


def pod_and_container(docs: list[dict], suffix: str) -> tuple[dict, dict]:
    pod = one(docs, "Deployment", suffix)["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


@pytest.mark.parametrize("mode", TLS_MODES)
def test_tls_renders_and_validates(helm, chart, mode, tmp_path):
    docs = render(helm, chart, *set_args({**TLS_MODES[mode], "networkPolicy.enabled": "true",
                                          "producer.enabled": "true"}))
    kinds = {k: len(by_kind(docs, k)) for k in {d["kind"] for d in docs}}
    certificates = 2 if mode == "cert-manager" else 0
    assert kinds == {**EXPECTED_KINDS["default"], "Job": 1, "NetworkPolicy": 3,
                     **({"Certificate": certificates} if certificates else {})}, kinds
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    validator = Path(sys.executable).with_name("kubernetes-validate")
    for version in K8S_VERSIONS:
        out = subprocess.run([str(validator), "--strict", "-k", version, str(manifest)], capture_output=True, text=True)
        assert out.returncode == 0 and "ERROR" not in out.stdout, f"{mode} @ {version}:\n{out.stdout}{out.stderr}"


@pytest.mark.parametrize("mode", TLS_MODES)
def test_tls_wiring_is_what_serve_and_consume_read(helm, chart, mode):
    from rtvi.serving.config import ServerConfig
    from rtvi.settings import env_name
    from rtvi.streaming.consumer.config import ConsumerConfig

    docs = render(helm, chart, *set_args(TLS_MODES[mode]))
    server_secret, client_secret = {"existing-secrets": ("inference-tls", "consumer-tls"),
                                    "cert-manager": ("rtvi-inference-tls", "rtvi-consumer-tls")}[mode]
    pod, server = pod_and_container(docs, "-inference")
    env = env_of(server)
    assert {"RTVI_TLS_CERT", "RTVI_TLS_KEY", "RTVI_TLS_CLIENT_CA", "RTVI_HEALTH_PORT"} <= set(env)
    assert {k for k in env if k.startswith("RTVI_")} <= {env_name(f) for f in ServerConfig.__dataclass_fields__}
    for variable in ("RTVI_TLS_CERT", "RTVI_TLS_KEY", "RTVI_TLS_CLIENT_CA"):
        assert mounted_secret(pod, server, env[variable]) == server_secret
    assert [Path(env[v]).name for v in ("RTVI_TLS_CERT", "RTVI_TLS_KEY", "RTVI_TLS_CLIENT_CA")] == \
        ["tls.crt", "tls.key", "ca.crt"]
    # The probes move to the plaintext health port, which the server opens.
    health = int(env["RTVI_HEALTH_PORT"])
    assert health not in (int(env["RTVI_PORT"]), int(env["RTVI_METRICS_PORT"]))
    assert {"name": "health", "containerPort": health, "protocol": "TCP"} in server["ports"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["grpc"]["port"] == health, probe
    pod, consumer = pod_and_container(docs, "-consumer")
    env = env_of(consumer)
    assert {k for k in env if k.startswith("RTVI_INFERENCE_TLS")} == {
        "RTVI_INFERENCE_TLS_CA", "RTVI_INFERENCE_TLS_CERT", "RTVI_INFERENCE_TLS_KEY"}
    assert set(env) <= {env_name(f) for f in ConsumerConfig.__dataclass_fields__}
    for variable in ("RTVI_INFERENCE_TLS_CA", "RTVI_INFERENCE_TLS_CERT", "RTVI_INFERENCE_TLS_KEY"):
        assert mounted_secret(pod, consumer, env[variable]) == client_secret
    named = env_of(pod_and_container(render(helm, chart, *set_args({**TLS_MODES[mode],
                                     "inference.tls.serverName": "inference.example"})), "-consumer")[1])
    assert named["RTVI_INFERENCE_TLS_SERVER_NAME"] == "inference.example"


def test_tls_off_leaves_the_probes_on_the_serving_port(helm, chart):
    pod, server = pod_and_container(render(helm, chart), "-inference")
    assert not {"RTVI_TLS_CERT", "RTVI_HEALTH_PORT"} & set(env_of(server))
    assert [p["name"] for p in server["ports"]] == ["grpc", "metrics"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    assert not {k for k in env_of(pod_and_container(render(helm, chart), "-consumer")[1]) if "TLS" in k}


def test_cert_manager_certificates_match_cert_managers_crd_and_the_wiring(helm, chart, certificate_schema):
    docs = render(helm, chart, *set_args(TLS_MODES["cert-manager"]))
    certificates = {c["metadata"]["name"]: c for c in by_kind(docs, "Certificate")}
    assert set(certificates) == {"rtvi-inference-tls", "rtvi-consumer-tls"}
    for certificate in certificates.values():
        assert certificate["apiVersion"] == "cert-manager.io/v1"
        jsonschema.validate({k: v for k, v in certificate.items() if k != "metadata"}, certificate_schema)
        assert unknown_fields(certificate["spec"], certificate_schema["properties"]["spec"]) == []
        assert certificate["spec"]["issuerRef"] == {"name": "rtvi-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    server, client = certificates["rtvi-inference-tls"]["spec"], certificates["rtvi-consumer-tls"]["spec"]
    assert "server auth" in server["usages"] and "client auth" in client["usages"]
    # The name the consumers dial (RTVI_INFERENCE_URL's host) is one the server's certificate carries.
    consumer = env_of(pod_and_container(docs, "-consumer")[1])
    host = consumer["RTVI_INFERENCE_URL"].removeprefix("dns:///").rpartition(":")[0]
    assert host in server["dnsNames"] and "RTVI_INFERENCE_TLS_SERVER_NAME" not in consumer
    assert {server["secretName"], client["secretName"]} == {"rtvi-inference-tls", "rtvi-consumer-tls"}
    # cert-manager's schema catches what a typo in the chart would send.
    broken = {**certificates["rtvi-inference-tls"], "spec": {**server, "usages": ["server-auth"]}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({k: v for k, v in broken.items() if k != "metadata"}, certificate_schema)
    assert unknown_fields({**server, "dnsName": ["x"]}, certificate_schema["properties"]["spec"]) == [".dnsName"]


TLS_WRONG_VALUES = [
    (["--set", "inference.tls.enabled=true"],
     "inference.tls.enabled needs inference.tls.server.secretName and client.secretName"),
    (["--set", "inference.tls.enabled=true", "--set", "inference.tls.server.secretName=s"],
     "inference.tls.enabled needs inference.tls.server.secretName and client.secretName"),
    (["--set", "inference.tls.enabled=true", "--set", "inference.tls.certManager.enabled=true"],
     "inference.tls.certManager.issuerRef.name is required"),
    ([*set_args(TLS_MODES["cert-manager"]), "--set", "inference.tls.server.secretName=s"], "not both"),
    (["--set", "inference.tls.certManager.enabled=true"], "inference.tls.enabled is false"),
    (["--set", "inference.tls.client.secretName=c"], "inference.tls.enabled is false"),
    ([*set_args(TLS_MODES["cert-manager"]), "--set", "inference.tls.certManager.issuerRef.kind=CAIssuer"],
     "cert-manager.io issuers are Issuer or ClusterIssuer"),
    ([*set_args(TLS_MODES["existing-secrets"]), "--set", "inference.healthPort=8001"],
     "inference.healthPort must differ from inference.port and inference.metricsPort"),
    ([*set_args(TLS_MODES["cert-manager"]), "--set", "inference.tls.certManager.duration=90d"],
     "inference.tls.certManager.duration: Does not match pattern"),
    (["--set", "networkPolicy.metricsFrom=everyone"], "networkPolicy.metricsFrom: Invalid type"),
]


@pytest.mark.parametrize("args, message", TLS_WRONG_VALUES)
def test_tls_and_network_policy_values_that_cannot_work_fail_at_render(helm, chart, args, message):
    assert_render_fails(helm, chart, args, message)


# --- NetworkPolicies: who may reach which port ---------------------------------------------------

NAMESPACE = "video"
# The labels the Redpanda operator's chart gives the brokers of Redpanda resource rtvi-redpanda
# (its ClusterPodLabelsSelector plus the StatefulSet's component).
BROKER_LABELS = {"app.kubernetes.io/name": "redpanda", "app.kubernetes.io/instance": "rtvi-redpanda",
                 "app.kubernetes.io/component": "redpanda-statefulset"}


def selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # the chart uses matchLabels only
    return selector.get("matchLabels", {}).items() <= labels.items()


def peer_admits(peer: dict, source: dict, namespace: str) -> bool:
    pods, namespaces = peer.get("podSelector"), peer.get("namespaceSelector")
    if "ipBlock" in peer:
        return False
    if namespaces is None:
        if source["namespace"] != namespace:
            return False
    elif not selects(namespaces, {"kubernetes.io/metadata.name": source["namespace"]}):
        return False
    return pods is None or selects(pods, source["labels"])


def admitted(policies: list[dict], source: dict, target: dict, port: int) -> bool:
    """Whether ``source`` may open ``port`` on ``target`` under these NetworkPolicies (ingress only,
    as the Kubernetes documentation defines them: a pod no policy selects admits everything)."""
    isolating = [p for p in policies if target["namespace"] == NAMESPACE and "Ingress" in p["spec"]["policyTypes"]
                 and selects(p["spec"]["podSelector"], target["labels"])]
    if not isolating:
        return True
    return any((not rule.get("ports") or any(p["port"] == port for p in rule["ports"]))
               and (not rule.get("from") or any(peer_admits(peer, source, NAMESPACE) for peer in rule["from"]))
               for policy in isolating for rule in policy["spec"].get("ingress") or [])


def pod_labels(doc: dict) -> dict:
    return doc["spec"]["template"]["metadata"]["labels"]


def test_network_policies_admit_only_the_intended_peers(helm, chart):
    docs = render(helm, chart, *set_args({"networkPolicy.enabled": "true", "producer.enabled": "true",
                                          "consumer.keda.enabled": "true"}), namespace=NAMESPACE)
    policies = by_kind(docs, "NetworkPolicy")
    pod = {name: {"namespace": NAMESPACE, "labels": pod_labels(one(docs, "Deployment", f"-{name}"))}
           for name in ("inference", "consumer")}
    pod["producer"] = {"namespace": NAMESPACE, "labels": pod_labels(by_kind(docs, "Job")[0])}
    pod["broker"] = {"namespace": NAMESPACE, "labels": BROKER_LABELS}
    other_release = {"namespace": NAMESPACE, "labels": {**pod["consumer"]["labels"],
                                                        "app.kubernetes.io/instance": "other"}}
    prometheus = {"namespace": "monitoring", "labels": {"app.kubernetes.io/name": "prometheus"}}
    operator = {"namespace": "redpanda-system", "labels": {"app.kubernetes.io/name": "operator"}}
    keda = {"namespace": "keda", "labels": {"app": "keda-operator"}}
    elsewhere = {"namespace": "default", "labels": pod["consumer"]["labels"]}
    grpc_port, inference_metrics, consumer_metrics = 8001, 8002, 9100
    kafka, admin = 9093, 9644
    expected = {
        # the inference gRPC port: this release's consumers only
        ("consumer", "inference", grpc_port): True,
        ("producer", "inference", grpc_port): False,
        ("inference", "inference", grpc_port): False,
        ("other_release", "inference", grpc_port): False,
        ("elsewhere", "inference", grpc_port): False,
        ("prometheus", "inference", grpc_port): False,
        # metrics: the monitoring namespace
        ("prometheus", "inference", inference_metrics): True,
        ("prometheus", "consumer", consumer_metrics): True,
        ("consumer", "inference", inference_metrics): False,
        ("other_release", "consumer", consumer_metrics): False,
        # the brokers' Kafka port: this release's pods, the brokers, the operator, KEDA
        ("consumer", "broker", kafka): True,
        ("producer", "broker", kafka): True,
        ("broker", "broker", kafka): True,
        ("operator", "broker", kafka): True,
        ("keda", "broker", kafka): True,
        ("other_release", "broker", kafka): False,
        ("elsewhere", "broker", kafka): False,
        ("prometheus", "broker", kafka): False,
        # the admin API: the brokers and the operator only
        ("operator", "broker", admin): True,
        ("broker", "broker", admin): True,
        ("consumer", "broker", admin): False,
    }
    peers = {**pod, "other_release": other_release, "prometheus": prometheus, "operator": operator, "keda": keda,
             "elsewhere": elsewhere}
    actual = {case: admitted(policies, peers[case[0]], peers[case[1]], case[2]) for case in expected}
    assert actual == expected, {case: ok for case, ok in actual.items() if ok != expected[case]}
    # KEDA's namespace is admitted only while KEDA scales the consumers; metricsFrom adds peers.
    docs = render(helm, chart, *set_args({"networkPolicy.enabled": "true"}), "--set-json",
                  'networkPolicy.metricsFrom=[{"ipBlock":{"cidr":"10.0.0.1/32"}}]', namespace=NAMESPACE)
    assert not admitted(by_kind(docs, "NetworkPolicy"), keda, pod["broker"], kafka)
    metrics_rule = one(docs, "NetworkPolicy", "-inference")["spec"]["ingress"][1]
    assert {"ipBlock": {"cidr": "10.0.0.1/32"}} in metrics_rule["from"]


def test_network_policies_are_off_by_default_and_follow_the_broker(helm, chart):
    for name in VALUES:
        assert not by_kind(render(helm, chart, *VALUES[name]), "NetworkPolicy"), name
    external = render(helm, chart, *set_args({"networkPolicy.enabled": "true", "redpanda.enabled": "false",
                                              "kafka.bootstrapServers": "kafka:9092"}))
    assert sorted(p["metadata"]["name"] for p in by_kind(external, "NetworkPolicy")) == ["rtvi-consumer",
                                                                                          "rtvi-inference"]
    closed = render(helm, chart, *set_args({"networkPolicy.enabled": "true", "networkPolicy.metricsNamespace": ""}))
    assert one(closed, "NetworkPolicy", "-consumer")["spec"]["ingress"] == []


# --- ingest: network cameras into the frames topic ----------------------------------------------

INGEST = {"ingest.enabled": "true", "ingest.credentialsSecret": "camera-credentials",
          "ingest.cameras[0].name": "gate", "ingest.cameras[0].url": "rtsp://viewer:${GATE_PASSWORD}@10.0.0.5/s1",
          "ingest.cameras[0].fps": "2", "ingest.cameras[0].roi": "{100,50,400,300}",
          "ingest.cameras[1].name": "dock", "ingest.cameras[1].url": "http://10.0.0.6/video.mjpg",
          "ingest.cameras[1].resize": "320x240"}


def test_ingest_renders_valid_manifests_with_every_option(helm, chart, tmp_path):
    docs = render(helm, chart, *VALUES["production"], *set_args(INGEST))
    kinds = {k: len(by_kind(docs, k)) for k in {d["kind"] for d in docs}}
    expected = EXPECTED_KINDS["production"]
    assert kinds == {**expected, "Deployment": expected["Deployment"] + 1, "Service": expected["Service"] + 1,
                     "ConfigMap": 1, "ServiceMonitor": expected["ServiceMonitor"] + 1}, kinds
    monitor = one(docs, "ServiceMonitor", "-ingest")["spec"]
    assert monitor["selector"]["matchLabels"] == one(docs, "Service", "-ingest-metrics")["spec"]["selector"]
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    validator = Path(sys.executable).with_name("kubernetes-validate")
    for version in (K8S_VERSIONS[0], K8S_VERSIONS[-1]):
        out = subprocess.run([str(validator), "--strict", "-k", version, str(manifest)], capture_output=True, text=True)
        assert out.returncode == 0 and "ERROR" not in out.stdout, f"{version}:\n{out.stdout}{out.stderr}"
    assert not by_kind(render(helm, chart), "ConfigMap"), "ingest is off by default"


def test_ingest_speaks_rtvi_ingests_settings_and_reads_the_cameras_from_values(helm, chart):
    from rtvi.settings import env_name
    from rtvi.streaming.ingest.cameras import Camera, Defaults, parse_file
    from rtvi.streaming.ingest.config import IngestConfig

    docs = render(helm, chart, *set_args(INGEST))
    deployment = one(docs, "Deployment", "-ingest")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["ingest"] and deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "never two pods reading one camera"
    env = env_of(container)
    assert set(env) <= {env_name(f) for f in IngestConfig.__dataclass_fields__}, set(env)
    assert env["RTVI_TOPIC"] == "frames" and env["RTVI_METRICS_PORT"] == "9101"
    assert container["envFrom"] == [{"secretRef": {"name": "camera-credentials"}}]
    # The cameras file is the ConfigMap's, mounted whole (a subPath mount would never see updates).
    mount = next(m for m in container["volumeMounts"] if m["name"] == "cameras")
    assert "subPath" not in mount and env["RTVI_CAMERAS"] == f"{mount['mountPath']}/cameras.yaml"
    configmap = one(docs, "ConfigMap", "-ingest-cameras")
    assert next(v for v in pod["volumes"] if v["name"] == "cameras")["configMap"]["name"] == \
        configmap["metadata"]["name"]
    assert "checksum/cameras" not in deployment["spec"]["template"]["metadata"].get("annotations", {})
    cameras = parse_file(configmap["data"]["cameras.yaml"], "cameras.yaml", Defaults(5.0), {"GATE_PASSWORD": "pw"})
    assert cameras == [Camera("gate", "rtsp://viewer:pw@10.0.0.5/s1", 2.0, None, (100, 50, 400, 300)),
                       Camera("dock", "http://10.0.0.6/video.mjpg", 5.0, (320, 240), None)]
    assert {p: container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")} == \
        {"livenessProbe": "/livez", "readinessProbe": "/readyz"}
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9101"
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    assert container["resources"]["requests"]["cpu"] == "500m"
    empty = one(render(helm, chart, "--set", "ingest.enabled=true"), "ConfigMap", "-ingest-cameras")
    assert parse_file(empty["data"]["cameras.yaml"], "cameras.yaml", Defaults(), {}) == []


def test_ingest_gets_the_kafka_security_of_every_client(helm, chart):
    docs = render(helm, chart, *set_args({**INGEST, "redpanda.enabled": "false", "kafka.bootstrapServers": "k:9093",
                                          "kafka.securityProtocol": "SASL_SSL", "kafka.sasl.mechanism": "PLAIN",
                                          "kafka.sasl.username": "rtvi", "kafka.sasl.passwordSecret.name": "kafka-auth",
                                          "kafka.tls.caSecret.name": "kafka-ca"}))
    pod = one(docs, "Deployment", "-ingest")["spec"]["template"]["spec"]
    assert_kafka_security(pod, pod["containers"][0], "SASL_SSL", ("PLAIN", "rtvi", "kafka-auth", "password"),
                          ("kafka-ca", "ca.crt"))


@pytest.mark.parametrize("values, message", [
    ({"ingest.cameras[0].name": "gate", "ingest.cameras[0].url": "rtsp://viewer:hunter2@10.0.0.5/s1"},
     'ingest.cameras "gate": the url holds a password, which would be stored in a ConfigMap'),
    ({"ingest.cameras[0].name": "a", "ingest.cameras[0].url": "rtsp://h/1", "ingest.cameras[1].name": "a",
      "ingest.cameras[1].url": "rtsp://h/2"}, 'ingest.cameras: the name "a" is used twice'),
    ({"ingest.cameras[0].name": "a"}, "url is required"),
    ({"ingest.cameras[0].name": "a", "ingest.cameras[0].url": "ftp://h/1"}, "ingest.cameras.0.url: Does not match"),
    ({"ingest.cameras[0].name": "a", "ingest.cameras[0].url": "rtsp://h/1", "ingest.cameras[0].roi": "{1,2,3}"},
     "ingest.cameras.0.roi: Array must have at least 4 items"),
    ({"ingest.rtspTransport": "http"}, "ingest.rtspTransport must be one of the following"),
])
def test_wrong_ingest_values_fail_with_a_clear_message(helm, chart, values, message):
    assert message in render_error(helm, chart, *set_args({"ingest.enabled": "true", **values}))
