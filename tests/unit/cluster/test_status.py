"""`rtvi status`'s reading of autoscalers and consumer partitions (no cluster).

The HPA objects are the kubernetes client's own models, as the API returns them; the
consumer metrics are rendered by prometheus_client from the consumer's metric names.
"""

from __future__ import annotations

from kubernetes.client import (V1ObjectMeta, V2CrossVersionObjectReference, V2HorizontalPodAutoscaler, V2HorizontalPodAutoscalerCondition,
                               V2HorizontalPodAutoscalerSpec, V2HorizontalPodAutoscalerStatus, V2MetricIdentifier,
                               V2MetricSpec, V2MetricStatus, V2MetricTarget, V2MetricValueStatus,
                               V2PodsMetricSource, V2ResourceMetricSource,
                               V2ResourceMetricStatus)
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from rtvi.cluster.status import autoscaler, partitions, render


def hpa(current_metrics, conditions=()) -> V2HorizontalPodAutoscaler:
    spec = V2HorizontalPodAutoscalerSpec(
        scale_target_ref=V2CrossVersionObjectReference(api_version="apps/v1", kind="Deployment",
                                                       name="rtvi-inference"),
        min_replicas=1, max_replicas=2,
        metrics=[
            V2MetricSpec(type="Resource", resource=V2ResourceMetricSource(
                name="cpu", target=V2MetricTarget(type="Utilization", average_utilization=50))),
            V2MetricSpec(type="Pods", pods=V2PodsMetricSource(
                metric=V2MetricIdentifier(name="queue_p95"), target=V2MetricTarget(type="AverageValue",
                                                                                   average_value="50m"))),
        ])
    status = V2HorizontalPodAutoscalerStatus(current_replicas=2, desired_replicas=2, current_metrics=current_metrics,
                                             conditions=list(conditions))
    return V2HorizontalPodAutoscaler(metadata=V1ObjectMeta(name="rtvi-inference"), spec=spec, status=status)


def test_each_metric_is_shown_beside_its_target():
    state = autoscaler(hpa([V2MetricStatus(type="Resource", resource=V2ResourceMetricStatus(
        name="cpu", current=V2MetricValueStatus(average_utilization=87)))]))
    assert state["metrics"] == [{"name": "cpu", "current": "87%", "target": "50%"},
                                {"name": "queue_p95", "current": None, "target": "50m"}]
    assert state["not_scaling"] is None
    text = render({"release": "rtvi", "namespace": "rtvi", "deployments": [], "autoscalers": [state],
                   "not_ready": [], "consumer_lag": None, "partitions": []})
    assert "hpa rtvi-inference: 2 current, 2 desired (min 1, max 2); cpu 87%/50%, queue_p95 <unknown>/50m " \
           "(current/target)" in text


def test_an_autoscaler_without_metrics_says_why_it_does_not_scale():
    condition = V2HorizontalPodAutoscalerCondition(
        type="ScalingActive", status="False", reason="FailedGetResourceMetric",
        message="the HPA was unable to compute the replica count: unable to get metrics for resource cpu")
    state = autoscaler(hpa(None, [condition]))
    assert state["metrics"][0] == {"name": "cpu", "current": None, "target": "50%"}
    assert state["not_scaling"].startswith("FailedGetResourceMetric: the HPA was unable")


def consumer_metrics(assigned: dict[int, int], lag: dict[int, int]) -> str:
    registry = CollectorRegistry()
    owned = Gauge("rtvi_consumer_partition_assigned", "", ["topic", "partition"], registry=registry)
    lags = Gauge("rtvi_consumer_lag", "", ["topic", "partition"], registry=registry)
    for partition, value in assigned.items():
        owned.labels("frames", str(partition)).set(value)
    for partition, value in lag.items():
        lags.labels("frames", str(partition)).set(value)
    return generate_latest(registry).decode()


def test_each_partition_is_listed_with_its_owner_and_lag():
    table = partitions({
        "consumer-b": consumer_metrics({1: 1, 0: 0}, {1: 7}),  # owned 0 before a rebalance gave it away
        "consumer-a": consumer_metrics({0: 1}, {0: 5}),
        "consumer-c": consumer_metrics({2: 1}, {}),  # assigned, no lag reported yet
        "consumer-d": consumer_metrics({3: 0}, {}),  # revoked, nobody has it yet
    })
    assert table == [
        {"topic": "frames", "partition": 0, "lag": 5, "owners": ["consumer-a"]},
        {"topic": "frames", "partition": 1, "lag": 7, "owners": ["consumer-b"]},
        {"topic": "frames", "partition": 2, "lag": None, "owners": ["consumer-c"]},
        {"topic": "frames", "partition": 3, "lag": None, "owners": []},
    ]
    text = render({"release": "rtvi", "namespace": "rtvi", "deployments": [], "autoscalers": [], "not_ready": [],
                   "consumer_lag": 12, "partitions": table})
    assert "consumer lag: 12\n    frames/0: lag 5, owned by consumer-a\n    frames/1: lag 7, owned by consumer-b\n" \
           "    frames/2: lag n/a, owned by consumer-c\n    frames/3: lag n/a, no owner (rebalancing)" in text
