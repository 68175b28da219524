"""`rtvi loadtest`: run a producer Job in the cluster and summarize what the consumers saw."""

from __future__ import annotations

import json
import sys
import time

from rtvi import __version__
from rtvi.cluster.aggregate import aggregate
from rtvi.cluster.config import LoadtestConfig
from rtvi.deadline import Deadline
from rtvi.errors import ExitCode, WorkFailed
from rtvi.streaming.probe import PodMetrics, from_prometheus
from rtvi.cluster.kube import ClusterError, ClusterNotFound, Kube
from rtvi.cluster.manifests import KafkaSecurity, producer_job, selector


def _job_name(release: str) -> str:
    return f"{release}-loadtest-{time.strftime('%Y%m%d-%H%M%S')}"


def build_job(cfg: LoadtestConfig, *, image: str, bootstrap: str, topic: str, max_frame_bytes: int,
              kafka_security: KafkaSecurity | None = None) -> dict:
    return producer_job(
        name=_job_name(cfg.release), release=cfg.release, image=image, bootstrap_servers=bootstrap, topic=topic,
        source=cfg.source, path=cfg.path, synthetic_size=cfg.synthetic_size, streams=cfg.streams, fps=cfg.fps,
        duration=cfg.duration, jpeg_quality=cfg.jpeg_quality, stream_prefix=f"{cfg.release}-loadtest",
        max_frame_bytes=max_frame_bytes, kafka_security=kafka_security,
    )


def _defaults(cfg: LoadtestConfig) -> dict:
    """What the chart's defaults give, for --dry-run without a cluster."""
    return {
        "image": cfg.image or f"rtvi-consumer:{__version__}",
        "bootstrap": cfg.bootstrap_servers or f"{cfg.release}-redpanda.{cfg.namespace}.svc.cluster.local:9093",
        "topic": cfg.topic or "frames",
        "max_frame_bytes": 4 * 1024 * 1024,
    }


def _from_release(cfg: LoadtestConfig, kube: Kube) -> dict:
    """Image, broker, topic and Kafka security as the release's consumer Deployment has them."""
    consumers = [d for d in kube.release_deployments(cfg.release)
                 if d.metadata.labels.get("app.kubernetes.io/component") == "consumer"]
    if not consumers:
        raise ClusterNotFound(f"release {cfg.release!r} has no consumer Deployment")
    container = consumers[0].spec.template.spec.containers[0]
    env = {e.name: e.value for e in container.env or [] if e.value is not None}
    return {
        "image": cfg.image or container.image,
        "bootstrap": cfg.bootstrap_servers or env["RTVI_BOOTSTRAP_SERVERS"],
        "topic": cfg.topic or env.get("RTVI_TOPIC", "frames"),
        "max_frame_bytes": int(env.get("RTVI_MAX_FRAME_BYTES", 4 * 1024 * 1024)),
        "kafka_security": KafkaSecurity.of(kube.serialize(consumers[0].spec.template.spec),
                                           kube.serialize(container)),
    }


def collect(kube: Kube, release: str, port: int) -> tuple[list[PodMetrics], list[str]]:
    """Every consumer pod's metrics (its Prometheus endpoint through the pod proxy), and the
    names of the pods that served none."""
    found, silent = [], []
    for pod in kube.pods(selector(release, "consumer")):
        name = pod.metadata.name
        text = kube.pod_metrics(name, port)
        if text:
            found.append(from_prometheus(name, text))
        else:
            silent.append(name)
    return found, silent


def _no_metrics(job: str, outcome: str, release: str, port: int, silent: list[str]) -> ClusterError:
    if not silent:
        return ClusterError(f"Job {job} {outcome}, but no consumer metrics: release {release!r} has no consumer pods")
    return ClusterError(
        f"Job {job} {outcome}, but no consumer metrics: {len(silent)} consumer pod(s) ({', '.join(silent)}) "
        f"served no /metrics on port {port} through the API server's pod proxy"
    )


def _delta(after: list[PodMetrics], before: list[PodMetrics]) -> list[PodMetrics]:
    """This run's share of cumulative pod counters (pods that restarted count from zero)."""
    earlier = {p.pod: p for p in before}
    out = []
    for pod in after:
        base = earlier.get(pod.pod)
        if base and base.processed <= pod.processed:
            pod.processed -= base.processed
            pod.failed -= base.failed
            pod.dropped -= base.dropped
            pod.retries -= base.retries
            pod.buckets = {le: count - base.buckets.get(le, 0.0) for le, count in pod.buckets.items()}
        out.append(pod)
    return out


def run_loadtest(cfg: LoadtestConfig) -> ExitCode:
    if cfg.dry_run:
        import yaml

        print(yaml.safe_dump(build_job(cfg, **_defaults(cfg)), sort_keys=False), end="")
        return ExitCode.OK
    kube = Kube(cfg.kube_context, cfg.namespace, cfg.request_timeout_s)
    kube.check_namespace()
    job = build_job(cfg, **_from_release(cfg, kube))
    name = job["metadata"]["name"]
    before, _ = collect(kube, cfg.release, cfg.metrics_port)
    kube.call(f"creating Job {name}", kube.batch.create_namespaced_job, cfg.namespace, job)
    progress = sys.stderr
    print(f"created Job {name}: {cfg.streams} streams x {cfg.fps:g} fps for {cfg.duration:g}s", file=progress)
    replicas: list[int] = []
    started = time.monotonic()
    deadline = Deadline.from_timeout(cfg.duration + cfg.wait_timeout_s)
    while True:
        status = kube.call(f"reading Job {name}", kube.batch.read_namespaced_job_status, name, cfg.namespace).status
        replicas += [h.status.current_replicas or 0 for h in kube.hpas(cfg.release)]
        elapsed = time.monotonic() - started
        print(f"\r{elapsed:5.0f}s / {cfg.duration:g}s  active={status.active or 0} succeeded={status.succeeded or 0} "
              f"failed={status.failed or 0}  inference replicas={replicas[-1] if replicas else '?'}",
              end="", file=progress, flush=True)
        if status.succeeded or status.failed:
            break
        if deadline.expired:
            print(file=progress)
            raise ClusterError(f"Job {name} did not finish within {cfg.duration + cfg.wait_timeout_s:.0f}s")
        time.sleep(5)
    print(file=progress)
    # Let consumers finish what was published: wait until their counters stop moving.
    previous, stable_since = -1, time.monotonic()
    while time.monotonic() - stable_since < 10 and not deadline.expired:
        now = sum(p.done for p in collect(kube, cfg.release, cfg.metrics_port)[0])
        if now != previous:
            previous, stable_since = now, time.monotonic()
        time.sleep(2)
    after, silent = collect(kube, cfg.release, cfg.metrics_port)
    if not after:
        raise _no_metrics(name, "succeeded" if status.succeeded else "FAILED", cfg.release, cfg.metrics_port, silent)
    summary = aggregate(_delta(after, before), seconds=cfg.duration)
    if replicas:
        summary.hpa_replicas = {"min": min(replicas), "max": max(replicas)}
    if cfg.output == "json":
        print(json.dumps({"job": name, "succeeded": bool(status.succeeded), **summary.as_dict()}, indent=2))
    else:
        print(f"load test {name}: {'succeeded' if status.succeeded else 'FAILED'}")
        print(summary.render())
    if not status.succeeded:
        raise WorkFailed(f"Job {name} failed; see kubectl describe job {name}")
    return ExitCode.OK
