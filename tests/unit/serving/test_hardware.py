"""CPU flags and usable CPUs, from fixture files (no real /proc or /sys is read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtvi.serving.hardware import cgroup_cpu_limit, cuda_device_present, parse_cpuinfo, usable_cpus, with_cpuid

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize(("name", "model", "native_bf16", "capability"), [
    ("cpuinfo-zen4.txt", "AMD EPYC 9R14", True, "avx2 fma avx512f avx512_vnni avx512_bf16"),
    ("cpuinfo-avx2.txt", "AMD EPYC 7R32", False, "avx2 fma"),
    ("cpuinfo-sapphire-rapids.txt", "Intel(R) Xeon(R) Platinum 8488C", True,
     "avx2 fma avx512f avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_int8"),
])
def test_cpuinfo_names_the_model_and_native_bf16(name, model, native_bf16, capability):
    info = parse_cpuinfo((FIXTURES / name).read_text())
    assert (info.model, info.native_bf16, info.capability) == (model, native_bf16, capability)


def test_cpuinfo_without_flags_assumes_nothing():
    info = parse_cpuinfo("processor : 0\n")
    assert (info.model, info.native_bf16, info.capability) == ("unknown", False, "baseline")


def _write(root: Path, relative: str, files: dict[str, str]) -> None:
    folder = root / relative
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_cgroup_v2_quota_in_own_cgroup(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    _write(tmp_path, "kubepods/pod1/ctr", {"cpu.max": "150000 100000\n"})
    assert cgroup_cpu_limit("0::/kubepods/pod1/ctr\n", tmp_path) == 1.5


def test_cgroup_v2_limit_of_a_parent_applies(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu\n")
    _write(tmp_path, "kubepods/pod1", {"cpu.max": "200000 100000\n"})
    _write(tmp_path, "kubepods/pod1/ctr", {"cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit("0::/kubepods/pod1/ctr\n", tmp_path) == 2.0


def test_cgroup_v2_namespace_root_and_no_limit(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu\n")
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit("0::/\n", tmp_path) is None
    (tmp_path / "cpu.max").write_text("400000 100000\n")
    assert cgroup_cpu_limit("0::/\n", tmp_path) == 4.0


def test_cgroup_v1_quota_with_host_path_not_mounted(tmp_path):
    """Docker on cgroup v1: /proc/self/cgroup shows the host path; the mount shows our cgroup at its root."""
    _write(tmp_path, "cpu,cpuacct", {"cpu.cfs_quota_us": "50000\n", "cpu.cfs_period_us": "100000\n"})
    text = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n"
    assert cgroup_cpu_limit(text, tmp_path) == 0.5


def test_cgroup_v1_unlimited_and_hybrid_unified_without_cpu(tmp_path):
    _write(tmp_path, "cpu", {"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n"})
    _write(tmp_path, "unified", {"cgroup.procs": "1\n"})
    assert cgroup_cpu_limit("1:cpu:/\n2:cpuacct:/\n0::/\n", tmp_path) is None


@pytest.mark.parametrize(("affinity", "quota", "expected"), [
    (64, None, 64), (64, 2.0, 2), (64, 1.5, 2), (2, 8.0, 2), (4, 0.25, 1), (0, None, 1),
])
def test_usable_cpus_is_affinity_capped_by_quota(affinity, quota, expected):
    assert usable_cpus(affinity, quota) == expected


def test_cpuid_overrides_the_flags_it_knows():
    """Under an emulator /proc shows the host's flags while CPUID (what the engines ask) shows the emulated CPU's."""
    host = parse_cpuinfo((FIXTURES / "cpuinfo-sapphire-rapids.txt").read_text())
    emulated = with_cpuid(host, {"AVX2": True, "FMA3": True, "AVX512F": False, "AVX512VNNI": False, "AVX512BF16": False})
    # avx_vnni and amx_* are not in numpy's table: once CPUID contradicts /proc, they are not trusted either
    assert emulated.capability == "avx2 fma" and not emulated.native_bf16 and not emulated.int8_dot
    assert emulated.model == host.model
    assert with_cpuid(host, {}) == host  # a numpy that reports nothing changes nothing
    agreeing = {"AVX2": True, "FMA3": True, "AVX512F": True, "AVX512VNNI": True, "AVX512BF16": True}
    assert with_cpuid(host, agreeing) == host  # a CPUID that agrees keeps the flags only /proc knows


def test_describe_names_the_model_and_a_missing_vnni():
    avx2 = parse_cpuinfo((FIXTURES / "cpuinfo-avx2.txt").read_text())
    assert avx2.describe() == "AMD EPYC 7R32 (avx2 fma, no VNNI)"
    zen4 = parse_cpuinfo((FIXTURES / "cpuinfo-zen4.txt").read_text())
    assert zen4.int8_dot and zen4.describe() == "AMD EPYC 9R14 (avx2 fma avx512f avx512_vnni avx512_bf16)"


def test_cuda_device_present_looks_for_nvidia_device_nodes(tmp_path):
    (tmp_path / "nvidiactl").touch()
    assert not cuda_device_present(tmp_path)
    (tmp_path / "nvidia0").touch()
    assert cuda_device_present(tmp_path)
