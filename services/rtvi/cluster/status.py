"""`rtvi status`: the release's Deployments, autoscaler, unready pods and consumer lag.

The autoscaler's metrics are shown as kubectl shows them (current/target); lag and the
owner of each partition come from every consumer pod's /metrics, read through the API
server's pod proxy, never from logs.
"""

from __future__ import annotations

import json


from rtvi.cluster.config import StatusConfig
from rtvi.cluster.kube import Kube
from rtvi.cluster.manifests import selector
from rtvi.errors import ExitCode
from rtvi.streaming.consumer.metrics import ASSIGNED, LAG
from rtvi.streaming.probe import parse


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


def partitions(metrics: dict[str, str]) -> list[dict]:
    """Each topic partition the consumers report: who owns it now and its lag, from every
    consumer pod's /metrics text (pod name -> text). A partition whose owner reports no lag
    yet has ``lag`` None; one nobody owns (a rebalance in progress) has no owners."""
    table: dict[tuple[str, int], dict] = {}
    for pod, text in sorted(metrics.items()):
        for sample in parse(text):
            if sample.name not in (ASSIGNED, LAG):
                continue
            topic, partition = sample.labels["topic"], int(sample.labels["partition"])
            entry = table.setdefault((topic, partition),
                                     {"topic": topic, "partition": partition, "lag": None, "owners": []})
            if sample.name == ASSIGNED:
                if sample.value == 1:
                    entry["owners"].append(pod)
            else:  # one series per partition, from its owner: the larger one while a rebalance settles
                entry["lag"] = max(entry["lag"] or 0, int(sample.value))
    return [table[key] for key in sorted(table)]


def _consumer_metrics(kube: Kube, release: str, port: int) -> dict[str, str]:
    texts = {pod.metadata.name: kube.pod_metrics(pod.metadata.name, port)
             for pod in kube.pods(selector(release, "consumer"))}
    return {pod: text for pod, text in texts.items() if text}


def _quantity(target) -> str | None:
    """An HPA metric value as kubectl prints it: utilization in percent, else the quantity."""
    if target is None:
        return None
    if target.average_utilization is not None:
        return f"{target.average_utilization}%"
    return target.average_value or target.value


# The field of an HPA metric (spec or status) that holds its source, by the metric's type.
_SOURCES = {"Resource": "resource", "ContainerResource": "container_resource", "Pods": "pods", "Object": "object",
            "External": "external"}


def _metric(metric) -> tuple[str, object | None]:
    """(name, source) of an HPA metric: the resource (cpu), or the custom metric's name."""
    source = getattr(metric, _SOURCES.get(metric.type, ""), None)
    if source is None:
        return metric.type, None
    return (source.name if metric.type in ("Resource", "ContainerResource") else source.metric.name), source


def autoscaler(hpa) -> dict:
    """One HPA: replicas, and each metric's current value beside its target (None: not read yet),
    and why it is not scaling, when its ScalingActive condition says so (no metrics API, ...)."""
    current = {}
    for metric in hpa.status.current_metrics or []:
        name, source = _metric(metric)
        current[name] = _quantity(source.current) if source else None
    metrics = []
    for metric in hpa.spec.metrics or []:
        name, source = _metric(metric)
        metrics.append({"name": name, "current": current.get(name),
                        "target": _quantity(source.target) if source else None})
    stalled = next((c for c in hpa.status.conditions or [] if c.type == "ScalingActive" and c.status == "False"), None)
    return {"name": hpa.metadata.name, "current": hpa.status.current_replicas, "desired": hpa.status.desired_replicas,
            "min": hpa.spec.min_replicas, "max": hpa.spec.max_replicas, "metrics": metrics,
            "not_scaling": f"{stalled.reason}: {stalled.message}" if stalled else None}


def gather(cfg: StatusConfig, kube: Kube) -> dict:
    deployments = [
        {"name": d.metadata.name, "ready": d.status.ready_replicas or 0, "desired": d.spec.replicas or 0}
        for d in kube.release_deployments(cfg.release)
    ]
    pods = kube.pods(f"app.kubernetes.io/instance={cfg.release}")
    not_ready = [{"pod": p.metadata.name, "reason": r} for p in pods if (r := _pod_problem(p))]
    table = partitions(_consumer_metrics(kube, cfg.release, cfg.metrics_port))
    lags = [entry["lag"] for entry in table if entry["lag"] is not None]
    return {"release": cfg.release, "namespace": cfg.namespace, "deployments": deployments,
            "autoscalers": [autoscaler(h) for h in kube.hpas(cfg.release)], "not_ready": not_ready,
            "consumer_lag": sum(lags) if lags else None, "partitions": table}


def render(state: dict) -> str:
    lines = [f"release {state['release']} in namespace {state['namespace']}"]
    for d in state["deployments"]:
        lines.append(f"  deployment {d['name']}: {d['ready']}/{d['desired']} ready")
    for h in state["autoscalers"]:
        metrics = ", ".join(f"{m['name']} {m['current'] or '<unknown>'}/{m['target']}" for m in h["metrics"])
        lines.append(f"  hpa {h['name']}: {h['current']} current, {h['desired']} desired (min {h['min']}, "
                     f"max {h['max']}); {metrics + ' (current/target)' if metrics else 'no metrics'}")
        if h["not_scaling"]:
            lines.append(f"    not scaling: {h['not_scaling']}")
    for p in state["not_ready"]:
        lines.append(f"  NOT READY {p['pod']}: {p['reason']}")
    lag = state["consumer_lag"]
    lines.append(f"  consumer lag: {'n/a (no consumer metrics)' if lag is None else lag}")
    for entry in state["partitions"]:
        lines.append(f"    {entry['topic']}/{entry['partition']}: lag "
                     f"{'n/a' if entry['lag'] is None else entry['lag']}, "
                     f"{'owned by ' + ', '.join(entry['owners']) if entry['owners'] else 'no owner (rebalancing)'}")
    return "\n".join(lines)


def run_status(cfg: StatusConfig) -> ExitCode:
    kube = Kube(cfg.kube_context, cfg.namespace, cfg.request_timeout_s)
    kube.check_namespace()
    state = gather(cfg, kube)
    print(json.dumps(state, indent=2) if cfg.output == "json" else render(state))
    return ExitCode.OK
