"""Thin access to the Kubernetes API with one-line errors.

Every call has a timeout and no client-side retries, so a missing or unreachable
cluster fails within seconds with a sentence that says what to fix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from rtvi.errors import BadInput, RtviError, Unreachable

T = TypeVar("T")


class ClusterError(RtviError):
    """A cluster operation failed; the message is meant for the user as is."""


class ClusterNotFound(ClusterError, BadInput):
    """No cluster configured, or the namespace, release or permission asked for is not there."""


class ClusterUnreachable(ClusterError, Unreachable):
    """The Kubernetes API did not answer."""


class Kube:
    def __init__(self, context: str, namespace: str, timeout: float) -> None:
        from kubernetes import client, config

        try:
            config.load_kube_config(context=context or None)
        except (config.ConfigException, FileNotFoundError, OSError) as kube_error:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                raise ClusterNotFound(
                    "no Kubernetes cluster configured: no usable kubeconfig (~/.kube/config or $KUBECONFIG"
                    f"{', context ' + repr(context) if context else ''}: {kube_error}) and not running in a pod"
                ) from None
        configuration = client.Configuration.get_default_copy()
        configuration.retries = 0
        self.host = configuration.host
        api = client.ApiClient(configuration)
        self._api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.autoscaling = client.AutoscalingV2Api(api)
        self.namespace = namespace
        self.timeout = timeout

    def serialize(self, obj: Any) -> Any:
        """An API model object as the plain dict the API server speaks (camelCase keys)."""
        return self._api.sanitize_for_serialization(obj)

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=self.timeout, **kwargs)
        except ApiException as exc:
            if exc.status == 403:
                raise ClusterNotFound(f"RBAC forbids {what} in namespace {self.namespace}: {exc.reason}") from None
            if exc.status == 404:
                raise ClusterNotFound(f"{what}: not found in namespace {self.namespace}") from None
            raise ClusterError(f"{what} failed: HTTP {exc.status} {exc.reason}") from None
        except (HTTPError, OSError) as exc:
            raise ClusterUnreachable(f"cannot reach the Kubernetes API at {self.host}: {exc}") from None

    def check_namespace(self) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.read_namespace(self.namespace, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                raise ClusterNotFound(f"namespace {self.namespace!r} does not exist") from None
            if exc.status != 403:  # namespace-scoped users may not read namespaces: carry on
                self.call("reading the namespace", self.core.read_namespace, self.namespace)
        except Exception:
            self.call("reading the namespace", self.core.read_namespace, self.namespace)

    def release_deployments(self, release: str) -> list:
        deployments = self.call(
            "listing deployments", self.apps.list_namespaced_deployment, self.namespace,
            label_selector=f"app.kubernetes.io/instance={release}",
        ).items
        if not deployments:
            raise ClusterNotFound(
                f"release {release!r} not found in namespace {self.namespace!r} "
                f"(no Deployments labelled app.kubernetes.io/instance={release})"
            )
        return deployments

    def pods(self, selector: str) -> list:
        return self.call("listing pods", self.core.list_namespaced_pod, self.namespace, label_selector=selector).items

    def pod_metrics(self, pod: str, port: int) -> str | None:
        """A pod's /metrics through the API server's pod proxy, or None if unreachable."""
        try:
            return self.call(
                f"reading metrics of pod {pod}", self.core.connect_get_namespaced_pod_proxy_with_path,
                f"{pod}:{port}", self.namespace, "metrics",
            )
        except ClusterError:
            return None

    def hpas(self, release: str) -> list:
        return self.call(
            "listing horizontal pod autoscalers", self.autoscaling.list_namespaced_horizontal_pod_autoscaler,
            self.namespace, label_selector=f"app.kubernetes.io/instance={release}",
        ).items
