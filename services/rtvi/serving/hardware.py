"""What this process may really use: CPU capability flags and the CPUs it is allowed.

Pure functions over file contents (unit-tested with fixture files) plus thin readers of
``/proc`` and ``/sys``. Nothing here imports torch: the ONNX Runtime server decides its
precision and thread counts without it.

The flags that decide kernels (AVX2, FMA, AVX-512, VNNI, bf16) are taken from CPUID as
numpy's runtime dispatch reads it, the same instruction ONNX Runtime, OpenVINO and torch
ask, where ``/proc/cpuinfo`` may describe another CPU (an emulator such as qemu-user runs
a program with the emulated CPUID but the host's ``/proc``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# CPU flags that mean bf16 matrix math runs natively (not emulated in fp32).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Flags worth recording beside a benchmark figure or in the start-up log.
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8")
# CPU flags with an 8-bit dot product that accumulates without saturating (VNNI); without
# them x86 int8 kernels multiply u8 x s8 pairs with vpmaddubsw, whose 16-bit sums saturate.
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# numpy's CPUID feature names -> the /proc/cpuinfo flag each one stands for.
CPUID_FLAGS = {"AVX2": "avx2", "FMA3": "fma", "AVX512F": "avx512f", "AVX512VNNI": "avx512_vnni",
               "AVX512BF16": "avx512_bf16"}


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]

    @property
    def native_bf16(self) -> bool:
        return any(flag in self.flags for flag in NATIVE_BF16_FLAGS)

    @property
    def int8_dot(self) -> bool:
        """Whether int8 matrix math has VNNI (no vpmaddubsw saturation)."""
        return any(flag in self.flags for flag in INT8_DOT_FLAGS)

    @property
    def capability(self) -> str:
        """The notable flags present, e.g. ``avx2 fma avx512f avx512_bf16``, or ``baseline``."""
        found = [flag for flag in REPORTED_FLAGS if flag in self.flags]
        return " ".join(found) or "baseline"

    def describe(self) -> str:
        """The model and its notable flags, saying when int8 lacks VNNI: for logs and error lines."""
        vnni = "" if self.int8_dot or "avx2" not in self.flags else ", no VNNI"
        return f"{self.model} ({self.capability}{vnni})"


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor's model name and flags from ``/proc/cpuinfo`` text."""
    model, flags = "unknown", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key in ("flags", "Features") and not flags:  # x86, arm64
            flags = frozenset(value.split())
    return CpuInfo(model=model, flags=flags)


def with_cpuid(info: CpuInfo, features: Mapping[str, bool]) -> CpuInfo:
    """``info`` with each flag of CPUID_FLAGS that ``features`` knows set as CPUID says. Where CPUID
    contradicts ``/proc`` on one of them, ``/proc`` describes another CPU (an emulator, a masking
    hypervisor) and none of its other flags is trusted either."""
    known = {flag for name, flag in CPUID_FLAGS.items() if name in features}
    present = {flag for name, flag in CPUID_FLAGS.items() if features.get(name)}
    if info.flags & known != present:
        return CpuInfo(info.model, frozenset(present))
    return CpuInfo(info.model, frozenset((info.flags - known) | present))


def _cpuid_features() -> Mapping[str, bool]:
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # a numpy without its dispatch table: /proc alone
        return {}
    return __cpu_features__


def cpu_info(path: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    try:
        info = parse_cpuinfo(path.read_text())
    except OSError:  # not Linux: no flags known, so nothing native is assumed
        info = CpuInfo(model="unknown", flags=frozenset())
    return with_cpuid(info, _cpuid_features())


def cpu_record() -> dict[str, object]:
    """What a measurement was made on, for a report file: model, notable and all flags."""
    cpu = cpu_info()
    return {"model": cpu.model, "capability": cpu.capability, "vnni": cpu.int8_dot, "flags": sorted(cpu.flags)}


def _cgroup_paths(proc_self_cgroup: str) -> tuple[str | None, str | None]:
    """This process's cgroup v2 path and v1 ``cpu`` controller path, from /proc/self/cgroup."""
    v2 = v1 = None
    for line in proc_self_cgroup.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _ancestors(root: Path, path: str) -> list[Path]:
    """``root/path`` and each parent up to ``root``: a limit anywhere above applies too.

    Inside a container's cgroup namespace the path is ``/`` and the limit sits at the root.
    When the host path is not mounted inside (cgroup v1 without a namespace), only the
    root is left, and it is the container's own cgroup.
    """
    folders = [root]
    current = root
    for part in [p for p in path.split("/") if p]:
        current = current / part
        folders.append(current)
    return [folder for folder in reversed(folders) if folder.is_dir()]


def _v2_limit(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_limit(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def cgroup_cpu_limit(proc_self_cgroup: str, fs_root: Path) -> float | None:
    """The CPU quota (in CPUs, possibly fractional) the cgroup hierarchy imposes, or None.

    ``fs_root`` is where cgroups are mounted (``/sys/fs/cgroup``); v2 (unified) and v1
    (``cpu`` or ``cpu,cpuacct`` controller) are both read, and the tightest limit wins.
    """
    v2_path, v1_path = _cgroup_paths(proc_self_cgroup)
    limits: list[float] = []
    if v2_path is not None:
        # Unified hierarchy at the root, or beside v1 under ``unified/`` (hybrid mode).
        v2_root = fs_root if (fs_root / "cgroup.controllers").exists() else fs_root / "unified"
        limits += [lim for f in _ancestors(v2_root, v2_path) if (lim := _v2_limit(f)) is not None]
    if v1_path is not None:
        for mount in ("cpu,cpuacct", "cpu", "cpuacct,cpu"):
            if (fs_root / mount).is_dir():
                limits += [lim for f in _ancestors(fs_root / mount, v1_path) if (lim := _v1_limit(f)) is not None]
                break
    return min(limits) if limits else None


def usable_cpus(affinity: int, quota: float | None) -> int:
    """Whole CPUs worth of work this process can do: its affinity, capped by the quota."""
    if quota is None:
        return max(1, affinity)
    return max(1, min(affinity, math.ceil(quota)))


def available_cpus() -> int:
    """CPUs this process may really use (affinity and cgroup quota), not the node's count."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        affinity = os.cpu_count() or 1
    try:
        proc_self_cgroup = Path("/proc/self/cgroup").read_text()
    except OSError:
        return usable_cpus(affinity, None)
    return usable_cpus(affinity, cgroup_cpu_limit(proc_self_cgroup, Path("/sys/fs/cgroup")))


def cuda_device_present(dev: Path = Path("/dev")) -> bool:
    """Whether an NVIDIA device node is visible (without importing torch or a CUDA runtime)."""
    return any(dev.glob("nvidia[0-9]*"))
