"""Build Kubernetes (control plane and node) from source through the Go module proxy, once.

No Kubernetes binaries are installable here, but ``go`` reaches proxy.golang.org, which
serves Kubernetes' own source. ``k8s.io/kubernetes`` cannot be ``go install``ed: its go.mod
replaces every ``k8s.io/*`` staging module with a ``./staging`` path. A generated helper
module requires ``k8s.io/kubernetes`` and replaces each of those modules (read from that
release's own go.mod, not hard-coded) with its published ``v0.X.Y`` twin, so ``go build``
resolves everything from the proxy. etcd (Debian's 3.4 is older than Kubernetes supports)
builds the same way from a three-line main around ``etcdmain``; kwok installs directly.
For a real node: the kubelet and kube-proxy come from the same Kubernetes build, CoreDNS
from a small main that links only the plugins the node needs (as CoreDNS documents for
custom builds), and the pod sandbox's ``pause`` is a static binary of our own (no image
registry is reachable, so Kubernetes' pause image cannot be pulled). metrics-server (the
resource metrics API behind ``kubectl top`` and the HPA) installs from its own module,
which also carries the manifests it is deployed from.

Everything lands under ``~/.cache/rtvi-k8s/<kubernetes version>/`` (``RTVI_K8S_CACHE``
moves the root), outside the repository, in one directory per part: ``bin`` (Kubernetes,
etcd, kwok, CoreDNS, pause) and ``metrics-server-<version>``. A stamp file in each marks a
finished build of exactly its versions, so adding or bumping one part never rebuilds the
other; a file lock lets a background build (started by conftest) and the test fixtures
share one build.

Run ``python tests/support/kube_build.py [part ...]`` to build ahead of the tests.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

KUBERNETES_VERSION = "v1.34.4"
ETCD_VERSION = "v3.5.35"
KWOK_VERSION = "v0.8.0"
# Its client-go is the same minor as the Kubernetes build.
COREDNS_VERSION = "v1.13.2"
# Add-ons whose custom resources the chart can render: their real CRDs, read from their
# Go modules (the Redpanda operator's module is not served, see redpanda_crd in the tests).
CRD_MODULES = {
    "github.com/kedacore/keda/v2@v2.21.0": ("config/crd/bases/keda.sh_scaledobjects.yaml",
                                            "config/crd/bases/keda.sh_triggerauthentications.yaml"),
    "github.com/prometheus-operator/prometheus-operator@v0.85.0": (
        "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",),
}
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok", "kubelet",
            "kube-proxy", "coredns", "pause")
KWOK_STAGES = "kwok-stages.yaml"
# The Stage objects kwokctl gives a kwok cluster by default, as files of kwok's module:
# nodes become Ready and keep a lease, pods run and turn Ready, Job pods complete,
# deleted pods go away. The standalone kwok binary starts with none.
KWOK_STAGE_FILES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)
METRICS_SERVER_MODULE = "sigs.k8s.io/metrics-server"
METRICS_SERVER_VERSION = "v0.9.0"
KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet", "kube-proxy")
STAMP = ".complete.json"
KUBERNETES, METRICS_SERVER = "kubernetes", "metrics-server"
PARTS = (KUBERNETES, METRICS_SERVER)  # in build order: the control plane's tests need the first one first


def go_binary() -> str | None:
    """``go`` on PATH, else the usual install location."""
    found = shutil.which("go")
    if found:
        return found
    default = Path("/usr/local/go/bin/go")
    return str(default) if default.exists() else None


def cache_root() -> Path:
    return Path(os.environ.get("RTVI_K8S_CACHE", Path.home() / ".cache" / "rtvi-k8s")) / KUBERNETES_VERSION


def bin_dir() -> Path:
    return cache_root() / "bin"


def metrics_server_dir() -> Path:
    """``metrics-server`` (the binary) and ``manifests/`` (its module's kustomize tree)."""
    return cache_root() / f"metrics-server-{METRICS_SERVER_VERSION}"


def part_dir(part: str) -> Path:
    return {KUBERNETES: bin_dir, METRICS_SERVER: metrics_server_dir}[part]()


def crd_dir() -> Path:
    """The add-ons' CRDs (KEDA, Prometheus Operator) the build fetched."""
    return bin_dir() / "crds"


def build_log() -> Path:
    return cache_root() / "build.log"


def _versions(part: str) -> dict[str, object]:
    if part == METRICS_SERVER:
        return {"metrics-server": METRICS_SERVER_VERSION}
    return {"kubernetes": KUBERNETES_VERSION, "etcd": ETCD_VERSION, "kwok": KWOK_VERSION, "crds": sorted(CRD_MODULES),
            "coredns": COREDNS_VERSION, "binaries": list(BINARIES), "pause": PAUSE_MAIN, "coredns_main": COREDNS_MAIN}


def is_built(*parts: str) -> bool:
    """Whether every part named (all of them by default) is cached at exactly its versions."""
    for part in parts or PARTS:
        try:
            if json.loads((part_dir(part) / STAMP).read_text())["versions"] != _versions(part):
                return False
        except (OSError, ValueError, KeyError):
            return False
    return True


def build_seconds(part: str = KUBERNETES) -> float:
    """How long the cached build of ``part`` took, as its stamp recorded."""
    return float(json.loads((part_dir(part) / STAMP).read_text())["build_seconds"])


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The modules Kubernetes' go.mod replaces with a ``./staging/src/...`` directory."""
    return re.findall(r"^\s*(\S+)\s+=>\s+\./staging/src/\S+\s*$", kubernetes_go_mod, flags=re.MULTILINE)


def helper_go_mod(kubernetes_go_mod: str, version: str) -> str:
    """A module that builds Kubernetes' commands with every staging module taken from the proxy."""
    staging_version = "v0." + version.removeprefix("v1.")
    go_line = re.search(r"^go (\S+)$", kubernetes_go_mod, flags=re.MULTILINE)
    godebug = re.findall(r"^godebug .*$", kubernetes_go_mod, flags=re.MULTILINE)
    replaces = "".join(f"\t{module} => {module} {staging_version}\n" for module in staging_modules(kubernetes_go_mod))
    tools = "".join(f"\tk8s.io/kubernetes/cmd/{command}\n" for command in KUBERNETES_COMMANDS)
    return (
        "module rtvi.local/kubernetes-binaries\n\n"
        f"go {go_line.group(1) if go_line else '1.24.0'}\n\n"
        + "".join(line + "\n" for line in godebug)
        + f"\nrequire k8s.io/kubernetes {version}\n\nreplace (\n{replaces})\n\ntool (\n{tools})\n"
    )


ETCD_MAIN = """// The etcd server, as the etcd module's own main starts it.
package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
"""


# The CoreDNS plugins the node's Corefile uses, in CoreDNS's own execution order
# (plugin.cfg): serve on one address, report readiness and health, answer cluster names.
COREDNS_PLUGINS = ("bind", "ready", "health", "errors", "kubernetes")
COREDNS_MAIN = """// CoreDNS with only the plugins a one-node test cluster needs.
package main

import (
\t"github.com/coredns/coredns/core/dnsserver"
\t"github.com/coredns/coredns/coremain"
""" + "".join(f'\t_ "github.com/coredns/coredns/plugin/{name}"\n' for name in COREDNS_PLUGINS) + """)

func init() {
\tdnsserver.Directives = []string{""" + ", ".join(f'"{name}"' for name in COREDNS_PLUGINS) + """}
}

func main() { coremain.Run() }
"""

PAUSE_MAIN = """// pause: a pod sandbox's first process. It holds the pod's namespaces, reaps the
// orphans it inherits as PID 1 and exits on SIGINT or SIGTERM, as Kubernetes' own does.
package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tsignals := make(chan os.Signal, 8)
\tsignal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
\tfor received := range signals {
\t\tif received != syscall.SIGCHLD {
\t\t\tos.Exit(0)
\t\t}
\t\tfor {
\t\t\tif pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil); pid <= 0 || err != nil {
\t\t\t\tbreak
\t\t\t}
\t\t}
\t}
}
"""


class _Builder:
    def __init__(self, go: str, log) -> None:
        self.go = go
        self.log = log
        self.env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": os.environ.get("GOFLAGS", "-buildvcs=false")}

    def say(self, message: str) -> None:
        print(f"[kube-build {time.strftime('%H:%M:%S')}] {message}", file=self.log, flush=True)

    def go_run(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
        command = ["nice", "-n", "19", self.go, *args]
        self.say("$ " + " ".join(command[3:]))
        out = subprocess.run(command, cwd=cwd, env={**self.env, **(env or {})}, capture_output=True, text=True)
        if out.stderr:
            self.log.write(out.stderr)
        if out.returncode != 0:
            raise RuntimeError(f"go {args[0]} failed in {cwd} (exit {out.returncode}); see {build_log()}")
        return out.stdout

    def kubernetes(self, work: Path, out: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        info = json.loads(self.go_run("mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}", cwd=work))
        go_mod = Path(info["GoMod"]).read_text()
        (work / "go.mod").write_text(helper_go_mod(go_mod, KUBERNETES_VERSION))
        self.say(f"{len(staging_modules(go_mod))} staging modules taken from the proxy")
        self.go_run("mod", "tidy", cwd=work)
        major, minor = KUBERNETES_VERSION.removeprefix("v").split(".")[:2]
        version_pkg = "k8s.io/component-base/version"
        ldflags = " ".join([
            "-s", "-w",
            f"-X {version_pkg}.gitVersion={KUBERNETES_VERSION}",
            f"-X {version_pkg}.gitMajor={major}",
            f"-X {version_pkg}.gitMinor={minor}",
            f"-X {version_pkg}.gitTreeState=clean",
        ])
        self.go_run("build", "-trimpath", "-ldflags", ldflags, "-o", str(out) + "/",
                    *(f"k8s.io/kubernetes/cmd/{command}" for command in KUBERNETES_COMMANDS), cwd=work)

    def main_module(self, name: str, source: str, work: Path, out: Path, *, go: str, require: str = "") -> None:
        """Build ``out/<name>`` from a one-file main package that requires ``require`` (module@version)."""
        work.mkdir(parents=True, exist_ok=True)
        module, _, version = require.partition("@")
        (work / "go.mod").write_text(f"module rtvi.local/{name}\n\ngo {go}\n"
                                     + (f"\nrequire {module} {version}\n" if require else ""))
        (work / "main.go").write_text(source)
        if require:
            self.go_run("mod", "tidy", cwd=work)
        self.go_run("build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / name), ".", cwd=work)

    def module_dir(self, module: str, work: Path) -> Path:
        return Path(json.loads(self.go_run("mod", "download", "-json", module, cwd=work))["Dir"])

    def crds(self, work: Path, out: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        (out / "crds").mkdir()
        for module, files in CRD_MODULES.items():
            source = self.module_dir(module, work)
            for name in files:
                shutil.copyfile(source / name, out / "crds" / Path(name).name)

    def metrics_server(self, work: Path, out: Path) -> None:
        """``go install`` of its command, with the version its Makefile stamps, and its manifests."""
        work.mkdir(parents=True, exist_ok=True)
        ldflags = f"-s -w -X {METRICS_SERVER_MODULE}/pkg/version.gitVersion={METRICS_SERVER_VERSION}"
        self.go_run("install", "-trimpath", "-ldflags", ldflags,
                    f"{METRICS_SERVER_MODULE}/cmd/metrics-server@{METRICS_SERVER_VERSION}", cwd=work,
                    env={"GOBIN": str(out)})
        module = self.module_dir(f"{METRICS_SERVER_MODULE}@{METRICS_SERVER_VERSION}", work)
        for manifest in (module / "manifests").rglob("*.yaml"):  # plain copies: the module cache is read-only
            target = out / "manifests" / manifest.relative_to(module / "manifests")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(manifest, target)

    def kwok(self, work: Path, out: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.go_run("install", "-trimpath", "-ldflags", "-s -w", f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}",
                    cwd=work, env={"GOBIN": str(out)})
        module = self.module_dir(f"sigs.k8s.io/kwok@{KWOK_VERSION}", work)
        (out / KWOK_STAGES).write_text("\n---\n".join((module / name).read_text() for name in KWOK_STAGE_FILES))


def _build_kubernetes(builder: _Builder, staging: Path) -> None:
    root = cache_root()
    builder.say(f"building Kubernetes {KUBERNETES_VERSION}, etcd {ETCD_VERSION}, kwok {KWOK_VERSION}, "
                f"CoreDNS {COREDNS_VERSION} and pause into {bin_dir()}")
    builder.main_module("etcd", ETCD_MAIN, root / "src" / "etcd", staging, go="1.23",
                        require=f"go.etcd.io/etcd/server/v3@{ETCD_VERSION}")
    builder.kwok(root / "src" / "kwok", staging)
    builder.crds(root / "src" / "crds", staging)
    builder.kubernetes(root / "src" / "kubernetes", staging)
    builder.main_module("coredns", COREDNS_MAIN, root / "src" / "coredns", staging, go="1.24.0",
                        require=f"github.com/coredns/coredns@{COREDNS_VERSION}")
    builder.main_module("pause", PAUSE_MAIN, root / "src" / "pause", staging, go="1.22")
    missing = [name for name in (*BINARIES, KWOK_STAGES) if not (staging / name).exists()]
    if missing:
        raise RuntimeError(f"build finished without {', '.join(missing)}")


def _build_metrics_server(builder: _Builder, staging: Path) -> None:
    builder.say(f"building metrics-server {METRICS_SERVER_VERSION} into {metrics_server_dir()}")
    builder.metrics_server(cache_root() / "src" / "metrics-server", staging)
    if not (staging / "metrics-server").exists() or not (staging / "manifests" / "base").is_dir():
        raise RuntimeError("the metrics-server build finished without its binary or its manifests")


def build(go: str, log=sys.stdout, part: str = KUBERNETES) -> float:
    """Build ``part`` into a fresh directory and move it into place; the seconds it took."""
    started = time.monotonic()
    target = part_dir(part)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    builder = _Builder(go, log)
    {KUBERNETES: _build_kubernetes, METRICS_SERVER: _build_metrics_server}[part](builder, staging)
    seconds = time.monotonic() - started
    (staging / STAMP).write_text(json.dumps({"versions": _versions(part), "build_seconds": round(seconds)}))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    builder.say(f"{part} done in {seconds:.0f} s")
    return seconds


def ensure_built(go: str, wait_s: float, log=sys.stdout, parts: tuple[str, ...] = PARTS) -> Path:
    """The cached bin directory, building the missing ``parts`` (or waiting for a build in
    progress) first, in PARTS order.

    One file lock serialises builders; a waiter gives up after ``wait_s`` seconds.
    """
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    with open(root / "build.lock", "w") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the Kubernetes build did not finish within {wait_s:.0f} s; see {build_log()}")
                time.sleep(5)
        for part in PARTS:
            if part in parts and not is_built(part):
                build(go, log, part)
    return bin_dir()


def main(argv: list[str]) -> int:
    parts = tuple(argv) or PARTS
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        print(f"kube_build: unknown part(s) {', '.join(unknown)}; the parts are {', '.join(PARTS)}", file=sys.stderr)
        return 2
    go = go_binary()
    if go is None:
        print("kube_build: no `go` on PATH", file=sys.stderr)
        return 1
    if is_built(*parts):
        print(f"kube_build: cached in {cache_root()}")
        return 0
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(build_log(), "a") as log:
        try:
            ensure_built(go, wait_s=3600, log=log, parts=parts)
        except (RuntimeError, TimeoutError) as error:
            print(f"kube_build: {error}", file=sys.stderr)
            return 1
    print(f"kube_build: built into {cache_root()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
