"""`rtvi status`: the release's Deployments, autoscaler, unready pods and consumer lag."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from rtvi.cluster.config import StatusConfig
from rtvi.cluster.kube import Kube
from rtvi.cluster.manifests import selector
from rtvi.errors import ExitCode


def _pod_problem(pod) -> str | None:
    if pod.status.phase in ("Succeeded",):
        return None
    conditions = {c.type: c for c in pod.status.conditions or []}
    if getattr(conditions.get("Ready"), "status", None) == "True":
        return None
    scheduled = conditions.get("PodScheduled")
    if scheduled is not None and scheduled.status == "False":  # no container yet: the scheduler says why
        return f"{scheduled.reason}: {scheduled.message or ''}".rstrip(": ")
    for cs in pod.status.container_statuses or []:
        if cs.state.waiting:
            return f"{cs.state.waiting.reason}: {cs.state.waiting.message or ''}".rstrip(": ")
        if cs.state.terminated:
            return f"terminated ({cs.state.terminated.reason}, exit {cs.state.terminated.exit_code})"
        if cs.last_state and cs.last_state.terminated:
            return f"restarting after {cs.last_state.terminated.reason} (restarts {cs.restart_count})"
    return pod.status.reason or f"{pod.status.phase}, not ready"


def _lag(kube: Kube, release: str, port: int) -> int | None:
    total, seen = 0, False
    for pod in kube.pods(selector(release, "consumer")):
        text = kube.pod_metrics(pod.metadata.name, port)
        for family in text_string_to_metric_families(text or ""):
            for sample in family.samples:
                if sample.name == "rtvi_consumer_lag":
                    total += int(sample.value)
                    seen = True
    return total if seen else None


def gather(cfg: StatusConfig, kube: Kube) -> dict:
    deployments = [
        {"name": d.metadata.name, "ready": d.status.ready_replicas or 0, "desired": d.spec.replicas or 0}
        for d in kube.release_deployments(cfg.release)
    ]
    hpas = []
    for h in kube.hpas(cfg.release):
        metrics = []
        for m in h.status.current_metrics or []:
            if m.resource:
                metrics.append(f"{m.resource.name} {m.resource.current.average_utilization}%")
            elif m.pods:
                metrics.append(f"{m.pods.metric.name} {m.pods.current.average_value}")
        hpas.append({"name": h.metadata.name, "current": h.status.current_replicas, "desired": h.status.desired_replicas,
                     "min": h.spec.min_replicas, "max": h.spec.max_replicas, "metrics": metrics})
    pods = kube.pods(f"app.kubernetes.io/instance={cfg.release}")
    not_ready = [{"pod": p.metadata.name, "reason": r} for p in pods if (r := _pod_problem(p))]
    return {"release": cfg.release, "namespace": cfg.namespace, "deployments": deployments, "autoscalers": hpas,
            "not_ready": not_ready, "consumer_lag": _lag(kube, cfg.release, cfg.metrics_port)}


def run_status(cfg: StatusConfig) -> ExitCode:
    kube = Kube(cfg.kube_context, cfg.namespace, cfg.request_timeout_s)
    kube.check_namespace()
    state = gather(cfg, kube)
    if cfg.output == "json":
        print(json.dumps(state, indent=2))
        return ExitCode.OK
    print(f"release {state['release']} in namespace {state['namespace']}")
    for d in state["deployments"]:
        print(f"  deployment {d['name']}: {d['ready']}/{d['desired']} ready")
    for h in state["autoscalers"]:
        print(f"  hpa {h['name']}: {h['current']} current, {h['desired']} desired (min {h['min']}, max {h['max']}); "
              f"{', '.join(h['metrics']) or 'no metrics yet'}")
    for p in state["not_ready"]:
        print(f"  NOT READY {p['pod']}: {p['reason']}")
    lag = state["consumer_lag"]
    print(f"  consumer lag: {'n/a (no consumer metrics)' if lag is None else lag}")
    return ExitCode.OK
