"""What /proc says about a process the tests or benchmarks started."""

from __future__ import annotations


def rss_mb(pid: int) -> float:
    """Resident set size in MiB (VmRSS), as the kernel (and a pod's memory limit) counts it."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise ValueError(f"process {pid} has no VmRSS (exited?)")
