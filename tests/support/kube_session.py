"""Pytest wiring of the real control plane: build early, test last, always stop.

A cold build of Kubernetes takes tens of minutes, so when collection finds tests that
use the ``kube`` fixture and the binaries are not cached, the build starts at once in a
background process (``nice``d), those tests are moved to the end of the run, and the
fixture waits for the build (bounded) while everything else runs. conftest imports the
hooks and the fixture from here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import kube_build, kube_metrics, node_images
from support.kube_cluster import ControlPlane
from support.kube_node import NODE_IP, PAUSE_IMAGE, Node, install_packages, missing_prerequisites

# Wait for the build at most this long from when the fixture first asks (a cold build on
# two cores takes about half of it).
BUILD_WAIT_S = float(os.environ.get("RTVI_K8S_BUILD_WAIT_S", 3000))
GPU_NODE = "kwok-gpu"
CPU_NODE = "kwok-cpu"
NEEDS_GO = (f"needs Go (`go` on PATH or /usr/local/go/bin/go) to build Kubernetes {kube_build.KUBERNETES_VERSION}, "
            f"etcd and kwok from source once into {kube_build.cache_root().parent}")

_background: subprocess.Popen | None = None
_report: list[str] = []


def _uses_kube(item: pytest.Item) -> bool:
    return bool({"kube", "kube_node"} & set(getattr(item, "fixturenames", ())))


def _parts(items: list[pytest.Item]) -> tuple[str, ...]:
    """What the selected tests need built: metrics-server only for the real node."""
    on_node = any("kube_node" in getattr(item, "fixturenames", ()) for item in items)
    return kube_build.PARTS if on_node else (kube_build.KUBERNETES,)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects, so `-m kube` / `-m "not kube"` see the marker
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    kube_items = [item for item in items if _uses_kube(item)]
    for item in kube_items:
        item.add_marker("kube")
    items[:] = [item for item in items if not _uses_kube(item)] + kube_items


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the build if tests that need it are still selected and nothing is cached."""
    global _background
    selected = sum(1 for item in session.items if _uses_kube(item))
    parts = _parts(session.items)
    if not selected or session.config.option.collectonly or kube_build.is_built(*parts):
        return
    go = kube_build.go_binary()
    if go is None:
        _report.append(f"kube: {selected} tests skipped: {NEEDS_GO}")
        return
    kube_build.cache_root().mkdir(parents=True, exist_ok=True)
    with open(kube_build.build_log(), "a") as log:
        _background = subprocess.Popen(["nice", "-n", "19", sys.executable, kube_build.__file__, *parts],
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _report.append(f"kube: binaries not cached; building in the background (log: {kube_build.build_log()})")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A build still running when the session ends is stopped (Go's cache keeps its progress)."""
    if _background is not None and _background.poll() is None:
        _background.terminate()
        try:
            _background.wait(30)
        except subprocess.TimeoutExpired:
            _background.kill()
            _background.wait(10)


def pytest_terminal_summary(terminalreporter) -> None:
    for line in _report:
        terminalreporter.write_line(line)


def _binaries(*parts: str) -> Path:
    """The cached bin directory once ``parts`` (Kubernetes by default) are built; skips
    without Go, fails on a failed build. The background build makes the parts in order, so
    the control plane's tests need not wait for metrics-server."""
    parts = parts or (kube_build.KUBERNETES,)
    started = time.monotonic()
    while _background is not None and _background.poll() is None and not kube_build.is_built(*parts):
        if time.monotonic() - started > BUILD_WAIT_S:
            pytest.fail(f"the Kubernetes build did not finish within {BUILD_WAIT_S:.0f} s; "
                        f"see {kube_build.build_log()}")
        time.sleep(2)
    if not kube_build.is_built(*parts):
        go = kube_build.go_binary()
        if go is None:
            pytest.skip(NEEDS_GO)
        if _background is not None and _background.returncode:
            pytest.fail(f"the Kubernetes build failed (exit {_background.returncode}): {_log_tail()}")
        with open(kube_build.build_log(), "a") as log:
            try:
                kube_build.ensure_built(go, BUILD_WAIT_S, log, parts)
            except (RuntimeError, TimeoutError) as error:
                pytest.fail(f"{error}: {_log_tail()}")
    built = ", ".join(f"{part} {kube_build.build_seconds(part):.0f} s" for part in parts)
    waited = time.monotonic() - started
    if _background is not None or waited > 60:
        _report.append(f"kube: built from source ({built}); the tests waited {waited:.0f} s for it")
    else:
        _report.append(f"kube: cached binaries in {kube_build.cache_root()}")
    return kube_build.bin_dir()


def _log_tail(lines: int = 20) -> str:
    try:
        return "\n".join(kube_build.build_log().read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no build log)"


@pytest.fixture(scope="session")
def kube(tmp_path_factory) -> Iterator[ControlPlane]:
    """One control plane for the session: a plain node and a GPU node, both faked by kwok.

    The GPU node carries what the production values select and tolerate:
    the ``nvidia.com/gpu.present`` label, an ``nvidia.com/gpu`` NoSchedule taint and
    ``nvidia.com/gpu`` capacity, as NVIDIA's device plugin and GPU operator set them.
    """
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make the control plane's certificates")
    cluster = ControlPlane(_binaries(), tmp_path_factory.mktemp("kube"))
    started = time.monotonic()
    cluster.start()
    try:
        cluster.add_fake_node(CPU_NODE)
        cluster.add_fake_node(GPU_NODE, labels={"nvidia.com/gpu.present": "true"},
                              taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
                              capacity={"nvidia.com/gpu": "4"})
        _report.append(f"kube: control plane and two fake nodes ready in {time.monotonic() - started:.0f} s")
        yield cluster
    finally:
        cluster.stop()


# rtvi's images the node runs: the consumer/producer image and the ONNX-only inference image
# (the torch one is 6 GB to import, and the ONNX one is what a CPU node should serve).
NODE_RTVI_IMAGES = ("consumer", "inference-onnx")


@pytest.fixture(scope="session")
def kube_node(tmp_path_factory, rtvi_images) -> Iterator[tuple[ControlPlane, Node, dict[str, str]]]:
    """A control plane of its own with one real node (kubelet, kube-proxy, containerd, CoreDNS),
    the resource metrics API (metrics-server) and the images it may run: ``(cluster, node,
    {"consumer": tag, "inference-onnx": tag, "kafka": tag, "metrics-server": tag})``. Its own
    cluster, so the kwok tests' pods never land on a real node; its API server listens on the
    node's bridge, so pods (metrics-server) reach it through the ``kubernetes`` Service."""
    why = missing_prerequisites()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the node tests: {why}")
        pytest.skip(why)
    bin_dir = _binaries(*kube_build.PARTS)
    install_packages()
    started = time.monotonic()
    tags = {name: rtvi_images.get(name)[0] for name in NODE_RTVI_IMAGES}
    tags["kafka"] = node_images.build_kafka(rtvi_images.engine, rtvi_images.base)
    node_images.build_scratch(rtvi_images.engine, bin_dir / "pause", PAUSE_IMAGE)
    metrics_server = kube_build.metrics_server_dir()
    tags["metrics-server"] = node_images.build_scratch(rtvi_images.engine, metrics_server / "metrics-server",
                                                       kube_metrics.IMAGE)
    built = time.monotonic()
    work = tmp_path_factory.mktemp("kube-node")
    cluster = ControlPlane(bin_dir, work / "cluster", address=NODE_IP)
    node = Node(cluster, work / "node")
    try:
        node.start_network()
        cluster.start()
        node.start(list(tags.values()), rtvi_images.save)
        kube_metrics.install(cluster, metrics_server / "manifests", work / "metrics-server")
        _report.append(f"kube node: images built in {built - started:.0f} s, node Ready in "
                       f"{time.monotonic() - built:.0f} s (control plane, image import, kubelet)")
        yield cluster, node, tags
    finally:
        stopping = time.monotonic()
        node.stop()
        cluster.stop()
        _report.append(f"kube node: node and control plane stopped in {time.monotonic() - stopping:.0f} s")
