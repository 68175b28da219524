"""A real Kubernetes control plane on loopback, with kwok's fake nodes, for the tests.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as they do in a
cluster (certificates, RBAC, service-account tokens, admission, the aggregation layer
for extension API servers such as metrics-server); only the kubelet is replaced by kwok,
which marks nodes Ready and plays the pods' lifecycle (running, Ready, Job pods
completing) through the API. Nothing runs in the pods. Everything binds 127.0.0.1 on
free ports (the API server of a real node's cluster binds the node's bridge address
instead, so its pods reach it) and is stopped by ``stop()``, also when start-up fails.

Fake nodes are added one at a time (``add_fake_node``); a real node (kubelet, containerd)
joins through support.kube_node.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from conftest import Proc, free_port
from support.tools import helm_binary

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


class ClusterStartError(RuntimeError):
    """A component did not come up; the message names it and carries its log's tail."""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


class Pki:
    """A throwaway CA and the certificates it signs, made with the openssl CLI."""

    def __init__(self, directory: Path, common_name: str = "rtvi-test-ca") -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = directory / "ca.crt"
        self._key("ca")
        _openssl("req", "-x509", "-new", "-key", "ca.key", "-out", "ca.crt", "-days", "2",
                 "-subj", f"/CN={common_name}", cwd=directory)

    def service_account_keys(self) -> tuple[Path, Path]:
        """(public, private) halves of the service-account token key: the API server verifies
        with the public one, the controller-manager's token controller and the API server sign
        with the private one."""
        self._key("service-account")
        _openssl("pkey", "-in", "service-account.key", "-pubout", "-out", "service-account.pub", cwd=self.dir)
        return self.dir / "service-account.pub", self.dir / "service-account.key"

    def _key(self, name: str) -> None:
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key",
                 cwd=self.dir)

    def issue(self, name: str, common_name: str, *, organization: str = "", server_names: tuple[str, ...] = ()
              ) -> tuple[Path, Path]:
        """A leaf certificate signed by the CA: a server one when ``server_names`` are given."""
        self._key(name)
        subject = (f"/O={organization}" if organization else "") + f"/CN={common_name}"
        _openssl("req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=self.dir)
        usage = "serverAuth" if server_names else "clientAuth"
        extensions = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                      f"extendedKeyUsage={usage}"]
        if server_names:
            alt = ",".join(f"IP:{n}" if n[0].isdigit() else f"DNS:{n}" for n in server_names)
            extensions.append(f"subjectAltName={alt}")
        (self.dir / f"{name}.ext").write_text("\n".join(extensions) + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=self.dir)
        return self.dir / f"{name}.crt", self.dir / f"{name}.key"


def kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path, user: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "rtvi-test",
        "clusters": [{"name": "rtvi-test", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "rtvi-test", "context": {"cluster": "rtvi-test", "user": user}}],
    }))
    return path


# The aggregation layer's request headers, as kubeadm sets them: the API server proxies a
# request to an extension API server (metrics-server) under the front-proxy client
# certificate and names the user in these headers, which the extension trusts because the
# certificate chains to the front-proxy CA published in kube-system's
# extension-apiserver-authentication ConfigMap.
FRONT_PROXY_CLIENT = "front-proxy-client"
REQUEST_HEADERS = {"username": "X-Remote-User", "group": "X-Remote-Group", "extra-headers-prefix": "X-Remote-Extra-"}
# The HPA controller's timing, shortened so a test sees a scale-up and a scale-down within
# minutes: how often it reads metrics (default 15 s) and how long it waits, by default, before
# a scale-down (5 min; an HPA's own behavior.scaleDown.stabilizationWindowSeconds overrides it).
HPA_SYNC_PERIOD = "5s"
HPA_DOWNSCALE_STABILIZATION = "15s"


@dataclass
class ControlPlane:
    bin_dir: Path
    work: Path
    # Where the API server listens: loopback, or a real node's bridge address, which then
    # also becomes the ``kubernetes`` Service's endpoint (in-cluster clients reach it there).
    address: str = "127.0.0.1"
    processes: dict[str, Proc] = field(default_factory=dict)
    server: str = ""
    kubeconfig: Path = Path()
    pki: Pki | None = None

    # ---- start and stop ----------------------------------------------------------------

    def start(self, timeout_s: float = 300) -> None:
        """Start every component in order, each waited for; on any failure stop them all."""
        try:
            self._start(time.monotonic() + timeout_s)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the components in reverse start order (clients before the API server, etcd last)."""
        for name in reversed(list(self.processes)):
            self.processes[name].terminate(timeout=20)

    def _start(self, deadline: float) -> None:
        self.work.joinpath("logs").mkdir(parents=True, exist_ok=True)
        pki = self.pki = Pki(self.work / "pki")
        etcd = self._start_etcd(deadline)
        self._start_apiserver(deadline, pki, Pki(self.work / "pki" / "front-proxy", "rtvi-test-front-proxy-ca"), etcd)
        scheduler_health = self._start_controllers(pki)
        kwok_health = self._start_kwok(pki)
        self._wait("kube-scheduler", deadline, scheduler_health)
        # The controller-manager is working once its service-account controller made the
        # default namespace's ServiceAccount, which every pod needs before admission.
        self._wait("kube-controller-manager", deadline,
                   lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0)
        self._wait("kwok", deadline, kwok_health)

    def _start_etcd(self, deadline: float) -> str:
        """etcd on loopback; its client URL."""
        client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
        self._run("etcd", [
            "--name", "rtvi-test", "--data-dir", str(self.work / "etcd"),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"rtvi-test={peer}",
            "--listen-metrics-urls", f"http://127.0.0.1:{free_port()}",
            "--unsafe-no-fsync",  # a throwaway store: durability only costs time here
        ])
        self._wait("etcd", deadline, lambda: http_ok(f"{client}/health"))
        return client

    def _start_apiserver(self, deadline: float, pki: Pki, front_proxy: Pki, etcd: str) -> None:
        """kube-apiserver with client-certificate authentication, RBAC, the default admission
        plugins and the aggregation layer."""
        port = free_port()
        self.server = f"https://{self.address}:{port}"
        serving = pki.issue("apiserver", "kube-apiserver", server_names=tuple(dict.fromkeys((
            self.address, "127.0.0.1", "localhost", "10.96.0.1", "kubernetes", "kubernetes.default",
            "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"))))
        admin = pki.issue("admin", "rtvi-test-admin", organization="system:masters")
        self.kubeconfig = kubeconfig(self.work / "kubeconfig", self.server, pki.ca, *admin, "rtvi-test-admin")
        service_account_public, service_account_private = pki.service_account_keys()
        proxy_client = front_proxy.issue(FRONT_PROXY_CLIENT, FRONT_PROXY_CLIENT)
        loopback = self.address.startswith("127.")
        self._run("kube-apiserver", [
            "--etcd-servers", etcd,
            "--bind-address", self.address, "--secure-port", str(port), "--advertise-address", self.address,
            # On loopback, the API server's own Endpoints would carry a loopback address, which
            # validation refuses: no in-cluster client can reach it then.
            *(["--endpoint-reconciler-type", "none"] if loopback else []),
            "--tls-cert-file", str(serving[0]), "--tls-private-key-file", str(serving[1]),
            "--client-ca-file", str(pki.ca),
            "--requestheader-client-ca-file", str(front_proxy.ca),
            "--requestheader-allowed-names", FRONT_PROXY_CLIENT,
            "--requestheader-username-headers", REQUEST_HEADERS["username"],
            "--requestheader-group-headers", REQUEST_HEADERS["group"],
            "--requestheader-extra-headers-prefix", REQUEST_HEADERS["extra-headers-prefix"],
            "--proxy-client-cert-file", str(proxy_client[0]), "--proxy-client-key-file", str(proxy_client[1]),
            # Reach an extension API server at its pod's address, not through its Service's
            # cluster IP (which only kube-proxy's rules on a real node would route).
            "--enable-aggregator-routing=true",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(service_account_public),
            "--service-account-signing-key-file", str(service_account_private),
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--authorization-mode", "Node,RBAC",
            "--allow-privileged=true",
            # Reach a real kubelet (logs, the pod proxy) at its node's address, not its host name.
            "--kubelet-preferred-address-types", "InternalIP",
            "--cert-dir", str(self.work / "apiserver-certs"),
        ])
        context = ssl.create_default_context(cafile=str(pki.ca))
        context.load_cert_chain(*admin)
        self._wait("kube-apiserver", deadline, lambda: http_ok(f"{self.server}/readyz", context))

    def _start_controllers(self, pki: Pki) -> Callable[[], bool]:
        """kube-controller-manager and kube-scheduler, each under its own identity; the scheduler's health check."""
        controller_manager = kubeconfig(self.work / "controller-manager.kubeconfig", self.server, pki.ca,
                                        *pki.issue("controller-manager", "system:kube-controller-manager"),
                                        "system:kube-controller-manager")
        self._run("kube-controller-manager", [
            "--kubeconfig", str(controller_manager),
            "--bind-address", "127.0.0.1", "--secure-port", str(free_port()),
            "--leader-elect=false",
            "--use-service-account-credentials=true",  # each controller acts under its own RBAC identity
            "--service-account-private-key-file", str(pki.dir / "service-account.key"),  # the token controller
            "--root-ca-file", str(pki.ca),
            "--cluster-cidr", POD_CIDR, "--service-cluster-ip-range", SERVICE_CIDR,
            "--controllers", "*",
            "--horizontal-pod-autoscaler-sync-period", HPA_SYNC_PERIOD,
            "--horizontal-pod-autoscaler-downscale-stabilization", HPA_DOWNSCALE_STABILIZATION,
        ])
        port = free_port()
        scheduler = kubeconfig(self.work / "scheduler.kubeconfig", self.server, pki.ca,
                               *pki.issue("scheduler", "system:kube-scheduler"), "system:kube-scheduler")
        self._run("kube-scheduler", [
            "--kubeconfig", str(scheduler), "--leader-elect=false",
            "--bind-address", "127.0.0.1", "--secure-port", str(port),
        ])
        insecure = ssl.create_default_context()  # the scheduler serves a self-signed certificate
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        return lambda: http_ok(f"https://127.0.0.1:{port}/healthz", insecure)

    def _start_kwok(self, pki: Pki) -> Callable[[], bool]:
        """kwok for the nodes annotated as fake (others, such as a real kubelet's, it leaves alone)."""
        config = kubeconfig(self.work / "kwok.kubeconfig", self.server, pki.ca,
                            *pki.issue("kwok", "rtvi-test-kwok", organization="system:masters"), "kwok")
        port = free_port()
        self._run("kwok", [
            "--kubeconfig", str(config),
            "--config", str(self.bin_dir / "kwok-stages.yaml"),
            "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
            "--node-lease-duration-seconds", "40",
            "--cidr", "10.244.0.0/24", "--node-ip", "127.0.0.1",
            "--server-address", f"127.0.0.1:{port}",
        ])
        return lambda: http_ok(f"http://127.0.0.1:{port}/healthz")

    def _run(self, name: str, args: list[str]) -> None:
        self.processes[name] = Proc([str(self.bin_dir / name), *args], self.work / "logs" / f"{name}.log")

    def _wait(self, name: str, deadline: float, ready: Callable[[], bool]) -> None:
        wait_started(name, deadline, ready, self.processes)

    def log_tail(self, name: str) -> str:
        return log_tail(self.processes[name])

    # ---- using it ----------------------------------------------------------------------

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120, stdin: str | None = None
                ) -> subprocess.CompletedProcess:
        out = subprocess.run([str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
                             input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({out.returncode}): {out.stderr}")
        return out

    def helm(self, *args: str, check: bool = True, timeout: float = 960, cwd: Path | None = None
             ) -> subprocess.CompletedProcess:
        """The real helm against this cluster (its own kubeconfig, no other cluster's settings)."""
        out = subprocess.run([helm_binary(), "--kubeconfig", str(self.kubeconfig), *args], capture_output=True,
                             text=True, timeout=timeout, cwd=cwd)
        if check and out.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({out.returncode}): {out.stderr}")
        return out

    def apply(self, objects: list[dict], *args: str) -> subprocess.CompletedProcess:
        return self.kubectl("apply", "-f", "-", *args, stdin=yaml.safe_dump_all(objects))

    def add_fake_node(self, name: str, *, labels: dict[str, str] | None = None, taints: list[dict] | None = None,
                      capacity: dict[str, str] | None = None, timeout_s: float = 120) -> None:
        """A node that kwok keeps Ready and whose pods it plays; waits until it is Ready."""
        resources = {"cpu": "16", "memory": "64Gi", "pods": "110", **(capacity or {})}
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                         "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": "amd64", "type": "kwok", **(labels or {})}},
            "spec": {"taints": taints or []},
            # kwok's node stage copies capacity into allocatable when it initialises the node.
            "status": {"capacity": resources, "allocatable": resources},
        }
        self.apply([node])
        self.kubectl("wait", "--for=condition=Ready", f"node/{name}", f"--timeout={int(timeout_s)}s",
                     timeout=timeout_s + 30)

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)


def log_tail(process: Proc, lines: int = 15) -> str:
    return "\n".join(process.output.splitlines()[-lines:])


def wait_started(name: str, deadline: float, ready: Callable[[], bool], processes: dict[str, Proc]) -> None:
    """Poll ``ready`` until it holds; fail at once, with its log, if any started process exited."""
    while not ready():
        failed = next((n for n, p in processes.items() if p.popen.poll() is not None), None)
        if failed:
            raise ClusterStartError(f"{failed} exited with {processes[failed].popen.returncode}: "
                                    f"{log_tail(processes[failed])}")
        if time.monotonic() > deadline:
            raise ClusterStartError(f"{name} was not ready in time: {log_tail(processes[name])}")
        time.sleep(0.5)


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
