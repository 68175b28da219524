"""One real Kubernetes node for the tests: kubelet, kube-proxy, containerd and CNI on this VM.

The control plane (``ControlPlane``) runs as elsewhere, its API server on the bridge's
address (``start_network()`` makes the bridge first); this adds what kwok fakes: a
kubelet that starts pods through Debian's containerd and runc (cgroupfs driver, this VM's
cgroup v1 hierarchy), a bridge CNI network of its own (``rtvi0``, 10.244.0.0/24, no NAT
to the outside), kube-proxy's iptables rules for Services, and CoreDNS for cluster names.
No registry is reachable, so images come from a local Docker engine (``docker save``)
into containerd's ``k8s.io`` namespace, the pod sandbox image included (a ``pause`` of
our own, see kube_build).

The node is reachable only on loopback and its bridge: the kubelet listens on the
bridge's address (the API server reaches it there for logs, the pod proxy and
metrics-server's scrapes), its healthz, kube-proxy's and CoreDNS's health on 127.0.0.1,
CoreDNS's DNS and the API server on the bridge (pods reach it through the ``kubernetes``
Service). ``stop()`` undoes everything ``start_network()`` and ``start()`` did, in
reverse, also after a failed start:
pods, processes, iptables rules (``kube-proxy --cleanup``), mounts, the bridge, the pod
cgroups and the sysctls the harness or the kubelet changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from conftest import Proc, free_port
from support.kube_cluster import ControlPlane, http_ok, kubeconfig, wait_started
from support.tools import apt_install

NODE_NAME = "rtvi-node"
BRIDGE = "rtvi0"
POD_SUBNET = "10.244.0.0/24"
NODE_IP = "10.244.0.1"  # the bridge's own address: pods' gateway, the kubelet's and CoreDNS's address
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
PACKAGES = ["containerd", "runc", "containernetworking-plugins", "conntrack", "iptables"]
PAUSE_IMAGE = "rtvi-pause:node"
# The harness sets the first two; the kubelet sets the kernel.* and vm.* ones itself
# (protectKernelDefaults is off, as by default). All are put back by stop().
SYSCTLS = ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables", "vm/overcommit_memory",
           "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops", "net/ipv4/conf/all/route_localnet")
CGROUP_ROOT = Path("/sys/fs/cgroup")


class NodeUnavailable(RuntimeError):
    """This machine cannot run a node (not root, no apt to install containerd, ...)."""


def missing_prerequisites() -> str | None:
    """Why a node cannot run here, in one line, or None if it can."""
    if os.geteuid() != 0:
        return "a real kubelet needs root (cgroups, mounts, network namespaces)"
    if not (CGROUP_ROOT / "memory").is_dir():
        return "a real kubelet here expects the cgroup v1 hierarchy (cgroupfs driver)"
    if not Path("/proc/sys/net/bridge").is_dir():
        return "the kernel has no bridge netfilter (net.bridge.bridge-nf-call-iptables)"
    return None


def install_packages() -> None:
    """Debian's containerd, runc, CNI plugins and conntrack, when missing."""
    if all(shutil.which(tool) for tool in ("containerd", "ctr", "runc", "conntrack", "iptables")) and \
            Path(CNI_BIN_DIR, "bridge").exists():
        return
    try:
        apt_install(PACKAGES, "containerd and the CNI plugins are missing and there is no apt-get to install them")
    except RuntimeError as exc:
        raise NodeUnavailable(str(exc)) from None


def _run(*args: str, check: bool = True, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=timeout, **kwargs)


@dataclass
class Node:
    cluster: ControlPlane
    work: Path
    processes: dict[str, Proc] = field(default_factory=dict)
    _sysctls: dict[str, str] = field(default_factory=dict)
    _netns_before: set[str] = field(default_factory=set)
    _bridge_created: bool = False
    _iptables: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.work / "containerd" / "containerd.sock"

    def ctr(self, *args: str, check: bool = True, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        return _run("ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args, check=check,
                    timeout=timeout, **kwargs)

    # ---- start ---------------------------------------------------------------------------

    def start_network(self) -> None:
        """The bridge with the node's address, first: the node's control plane listens on that
        address (``ControlPlane(address=NODE_IP)``), so pods reach the API server through the
        ``kubernetes`` Service as in any cluster. Undone by ``stop()``."""
        try:
            self._network()
        except BaseException:
            self.stop()
            raise

    def start(self, images: list[str], docker_save, timeout_s: float = 300) -> None:
        """Bring the node up with ``images`` (tags in a Docker engine; ``docker_save(tag, file)``
        writes one as a tar) imported, and wait until it is Ready and DNS answers."""
        try:
            self._start(images, docker_save, time.monotonic() + timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start(self, images: list[str], docker_save, deadline: float) -> None:
        (self.work / "logs").mkdir(parents=True, exist_ok=True)
        self._netns_before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
        if not self._bridge_created:
            self._network()
        self._start_containerd(deadline)
        for tag in [PAUSE_IMAGE, *images]:
            tar = self.work / "image.tar"
            docker_save(tag, tar)
            self.ctr("images", "import", str(tar))
            tar.unlink()
        self._start_coredns(deadline)
        self._start_kubelet()
        self._start_kube_proxy()
        self._wait("kubelet", deadline, lambda: self.cluster.kubectl(
            "get", "node", NODE_NAME, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            check=False).stdout == "True")

    def _network(self) -> None:
        """Forwarding and bridge netfilter on (kube-proxy's rules must see bridged pod traffic),
        and the bridge with the node's address, made before the CNI plugin first uses it."""
        for key in SYSCTLS:
            path = Path("/proc/sys") / key
            if path.exists():
                self._sysctls[key] = path.read_text().strip()
        for key in ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"):
            (Path("/proc/sys") / key).write_text("1")
        if _run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
            raise NodeUnavailable(f"a network interface {BRIDGE} already exists (another node running?)")
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        self._bridge_created = True
        _run("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        # Bridged pod traffic passes the FORWARD chain (bridge netfilter), whose policy a
        # Docker engine sets to DROP: let the node's own bridge through, as CNI's firewall
        # plugin would, and nothing else.
        for rule in self._forward_rules():
            _run("iptables", "-I", "FORWARD", *rule)
            self._iptables.append(rule)
        cni = self.work / "cni" / "net.d"
        cni.mkdir(parents=True)
        (cni / "10-rtvi.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "rtvi",
            "plugins": [{
                "type": "bridge", "bridge": BRIDGE, "isGateway": True, "hairpinMode": True,
                "ipMasq": False,  # pods talk to each other and the node only
                "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                         "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(self.work / "cni" / "ipam")},
            }],
        }, indent=2))

    @staticmethod
    def _forward_rules() -> list[tuple[str, ...]]:
        comment = ("-m", "comment", "--comment", "rtvi test node")
        return [("-i", BRIDGE, *comment, "-j", "ACCEPT"), ("-o", BRIDGE, *comment, "-j", "ACCEPT")]

    def _start_containerd(self, deadline: float) -> None:
        root = self.work / "containerd"
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = root / "config.toml"
        root.mkdir(exist_ok=True)
        config.write_text(f"""version = 2
root = "{root / 'root'}"
state = "{root / 'state'}"
[grpc]
  address = "{self.socket}"
[{cri}]
  sandbox_image = "docker.io/library/{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # This VM's root lacks CAP_SYS_RESOURCE, so a container may not get a lower OOM score
  # than containerd's own (the kubelet asks -998 for sandboxes): clamp it, as in rootless setups.
  restrict_oom_score_adj = true
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{self.work / 'cni' / 'net.d'}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root / 'opt'}"
""")
        self._run_process("containerd", ["containerd", "--config", str(config)])
        self._wait("containerd", deadline, lambda: self.ctr("version", check=False).returncode == 0)

    def _start_coredns(self, deadline: float) -> None:
        ready = free_port()
        identity = kubeconfig(self.work / "coredns.kubeconfig", self.cluster.server, self.cluster.pki.ca,
                              *self.cluster.pki.issue("coredns", "rtvi-test-coredns", organization="system:masters"),
                              "coredns")
        corefile = self.work / "Corefile"
        # Authoritative for the cluster's names only: anything else is refused at once.
        corefile.write_text(f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 {{
    bind {NODE_IP}
    ready 127.0.0.1:{ready}
    health 127.0.0.1:{free_port()}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{
        kubeconfig {identity} rtvi-test
        pods insecure
        ttl 5
    }}
}}
""")
        self._run_process("coredns", [str(self.cluster.bin_dir / "coredns"), "-conf", str(corefile)])
        self._wait("coredns", deadline, lambda: http_ok(f"http://127.0.0.1:{ready}/ready"))

    def _start_kubelet(self) -> None:
        pki = self.cluster.pki
        identity = kubeconfig(self.work / "kubelet.kubeconfig", self.cluster.server, pki.ca,
                              *pki.issue("kubelet", f"system:node:{NODE_NAME}", organization="system:nodes"),
                              f"system:node:{NODE_NAME}")
        resolv = self.work / "resolv.conf"
        resolv.write_text("")  # pods resolve through CoreDNS only: no upstream, no host search domains
        config = self.work / "kubelet.yaml"
        config.write_text(yaml.safe_dump({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": NODE_IP, "port": free_port(), "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": free_port(),
            # The API server (which verifies nothing of the kubelet's own serving certificate) calls
            # it for logs and the pod proxy; on the node's private bridge only, so no client auth.
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "clusterDNS": [NODE_IP], "clusterDomain": CLUSTER_DOMAIN, "resolvConf": str(resolv),
            "failSwapOn": False,
            # A shared CI disk: never evict or collect images because the disk is fuller than
            # the defaults like; the images cannot be pulled back.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
        }))
        self._run_process("kubelet", [
            str(self.cluster.bin_dir / "kubelet"), "--config", str(config), "--kubeconfig", str(identity),
            "--root-dir", str(self.work / "kubelet"), "--hostname-override", NODE_NAME, "--node-ip", NODE_IP,
        ])

    def _start_kube_proxy(self) -> None:
        identity = kubeconfig(self.work / "kube-proxy.kubeconfig", self.cluster.server, self.cluster.pki.ca,
                              *self.cluster.pki.issue("kube-proxy", "system:kube-proxy"), "system:kube-proxy")
        self._run_process("kube-proxy", [
            str(self.cluster.bin_dir / "kube-proxy"), "--kubeconfig", str(identity),
            "--hostname-override", NODE_NAME, "--proxy-mode", "iptables", "--cluster-cidr", POD_SUBNET,
            "--healthz-bind-address", f"127.0.0.1:{free_port()}",
            "--metrics-bind-address", f"127.0.0.1:{free_port()}",
            "--nodeport-addresses", f"{NODE_IP}/32",
            # Leave the host's conntrack table size and timeouts alone.
            "--conntrack-max-per-core", "0", "--conntrack-tcp-timeout-established", "0",
            "--conntrack-tcp-timeout-close-wait", "0",
        ])

    def _run_process(self, name: str, args: list[str]) -> None:
        self.processes[name] = Proc(args, self.work / "logs" / f"{name}.log")

    def _wait(self, name: str, deadline: float, ready) -> None:
        wait_started(name, deadline, ready, self.processes)

    # ---- using it ------------------------------------------------------------------------

    def container_pid(self, container_id: str) -> int:
        """The host PID of a container's first process (``containerd://<id>`` from a pod's status)."""
        pid = self._tasks().get(container_id.removeprefix("containerd://"))
        if pid is None:
            raise LookupError(f"no running task for container {container_id}")
        return pid

    # ---- stop ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Everything start() did, undone in reverse; best effort at each step, so one
        failure never leaves the rest running."""
        if "kubelet" in self.processes and self.processes["kubelet"].popen.poll() is None:
            self._drain()
        for name in ("kube-proxy", "kubelet", "coredns"):
            if name in self.processes:
                self.processes[name].terminate(timeout=30)
        if "kube-proxy" in self.processes:
            _run(str(self.cluster.bin_dir / "kube-proxy"), "--cleanup", check=False)
        if "containerd" in self.processes:
            self._kill_leftover_tasks()
            self.processes["containerd"].terminate(timeout=30)
        self._unmount()
        for rule in self._iptables:
            _run("iptables", "-D", "FORWARD", *rule, check=False)
        if self._bridge_created:
            _run("ip", "link", "delete", BRIDGE, check=False)
        self._remove_pod_cgroups()
        for key, value in self._sysctls.items():
            try:
                (Path("/proc/sys") / key).write_text(value)
            except OSError:
                pass

    def _drain(self) -> None:
        """Delete every workload and pod through the API and let the kubelet stop them,
        so the CNI plugin tears each pod's network down (bounded)."""
        kubectl = self.cluster.kubectl
        kubectl("delete", "deployments,statefulsets,daemonsets,replicasets,jobs", "--all", "--all-namespaces",
                "--wait=false", check=False)
        kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=5", "--timeout=90s", check=False,
                timeout=120)
        deadline = time.monotonic() + 60
        while self._tasks() and time.monotonic() < deadline:
            time.sleep(1)

    def _tasks(self) -> dict[str, int]:
        """containerd's tasks (container id -> host PID), from ``ctr task ls``'s table."""
        out = self.ctr("task", "ls", check=False, timeout=30)
        rows = (line.split() for line in out.stdout.splitlines()[1:] if line.strip())
        return {task: int(pid) for task, pid, *_ in rows}

    def _kill_leftover_tasks(self) -> None:
        for task in self._tasks():
            self.ctr("task", "kill", "--signal", "SIGKILL", task, check=False, timeout=30)
        time.sleep(1)
        for task in self._tasks():
            self.ctr("task", "delete", "--force", task, check=False, timeout=30)

    def _unmount(self) -> None:
        """Mounts the kubelet (volumes), containerd (root filesystems, shm) and the CRI plugin
        (network namespaces) left behind; deepest first."""
        created = set(os.listdir("/run/netns")) - self._netns_before if os.path.isdir("/run/netns") else set()
        netns = {f"/run/netns/{name}" for name in created}
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        ours = {m for m in mounts if m.startswith(f"{self.work}/") or m in netns}
        for mount in sorted(ours, key=len, reverse=True):
            _run("umount", "--lazy", mount, check=False)
        for path in netns:
            Path(path).unlink(missing_ok=True)

    @staticmethod
    def _remove_pod_cgroups() -> None:
        """The kubelet's ``kubepods`` hierarchy in every cgroup v1 controller, leaves first."""
        for controller in CGROUP_ROOT.iterdir():
            top = controller / "kubepods"
            if not top.is_dir():
                continue
            for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                                    reverse=True):
                try:
                    directory.rmdir()
                except OSError:
                    pass
            try:
                top.rmdir()
            except OSError:
                pass
