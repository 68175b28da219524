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
registry is reachable, so Kubernetes' pause image cannot be pulled).

The binaries land in ``~/.cache/rtvi-k8s/<kubernetes version>/bin`` (``RTVI_K8S_CACHE``
moves the root), outside the repository; a stamp file marks a finished build, and a file
lock lets a background build (started by conftest) and the test fixture share one build.

Run ``python tests/support/kube_build.py`` to build ahead of the tests.
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
KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet", "kube-proxy")
STAMP = ".complete.json"


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


def crd_dir() -> Path:
    """The add-ons' CRDs (KEDA, Prometheus Operator) the build fetched."""
    return bin_dir() / "crds"


def build_log() -> Path:
    return cache_root() / "build.log"


def _versions() -> dict[str, str]:
    return {"kubernetes": KUBERNETES_VERSION, "etcd": ETCD_VERSION, "kwok": KWOK_VERSION, "crds": sorted(CRD_MODULES),
            "coredns": COREDNS_VERSION, "binaries": list(BINARIES), "pause": PAUSE_MAIN, "coredns_main": COREDNS_MAIN}


def is_built() -> bool:
    stamp = bin_dir() / STAMP
    try:
        return json.loads(stamp.read_text())["versions"] == _versions()
    except (OSError, ValueError, KeyError):
        return False


def build_seconds() -> float:
    """How long the cached build took, as its stamp recorded."""
    return float(json.loads((bin_dir() / STAMP).read_text())["build_seconds"])


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

    def kwok(self, work: Path, out: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.go_run("install", "-trimpath", "-ldflags", "-s -w", f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}",
                    cwd=work, env={"GOBIN": str(out)})
        module = self.module_dir(f"sigs.k8s.io/kwok@{KWOK_VERSION}", work)
        (out / KWOK_STAGES).write_text("\n---\n".join((module / name).read_text() for name in KWOK_STAGE_FILES))


def build(go: str, log=sys.stdout) -> float:
    """Build every binary into a fresh directory and move it into place; the seconds it took."""
    root = cache_root()
    started = time.monotonic()
    staging = root / "bin.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    builder = _Builder(go, log)
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
    seconds = time.monotonic() - started
    (staging / STAMP).write_text(json.dumps({"versions": _versions(), "build_seconds": round(seconds)}))
    shutil.rmtree(bin_dir(), ignore_errors=True)
    staging.rename(bin_dir())
    builder.say(f"done in {seconds:.0f} s")
    return seconds


def ensure_built(go: str, wait_s: float, log=sys.stdout) -> Path:
    """The cached bin directory, building it (or waiting for a build in progress) first.

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
        if not is_built():
            build(go, log)
    return bin_dir()


def main() -> int:
    go = go_binary()
    if go is None:
        print("kube_build: no `go` on PATH", file=sys.stderr)
        return 1
    if is_built():
        print(f"kube_build: cached in {bin_dir()}")
        return 0
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(build_log(), "a") as log:
        try:
            ensure_built(go, wait_s=3600, log=log)
        except (RuntimeError, TimeoutError) as error:
            print(f"kube_build: {error}", file=sys.stderr)
            return 1
    print(f"kube_build: built into {bin_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
