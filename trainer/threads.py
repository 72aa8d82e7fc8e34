"""How many threads torch's CPU kernels use: as many as this process may run on.

torch starts as many intra-op threads as the machine has cores, whatever the process is
allowed: in a container given 2 CPUs of 64, or a job pinned to a few cores, its threads spin
against each other and a step runs several times slower (docs/performance.md, "Threads").
"""

from __future__ import annotations

import math
import os
import time

import torch


def usable_cpus(cgroup: str = "/sys/fs/cgroup") -> int:
    """The CPUs this process may run on: its affinity, capped by the container's CPU quota
    (cgroup v2 cpu.max, or v1 cpu.cfs_quota_us / cpu.cfs_period_us, under `cgroup`)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    quota = _quota(cgroup)
    return max(1, min(cpus, math.ceil(quota)) if quota else cpus)


def _quota(cgroup: str) -> float | None:
    """CPUs' worth of time per period the cgroup may use, or None without a limit."""
    try:
        with open(os.path.join(cgroup, "cpu.max")) as f:
            limit, period = f.read().split()[:2]
        return None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(cgroup, "cpu", "cpu.cfs_quota_us")) as f:
            limit = int(f.read())
        with open(os.path.join(cgroup, "cpu", "cpu.cfs_period_us")) as f:
            period = int(f.read())
        return None if limit <= 0 else limit / period
    except (OSError, ValueError):
        return None


def _cpu_times(stat: str) -> tuple[list[int], int]:
    """The machine's summed CPU times (the "cpu" line of /proc/stat) and its CPU count."""
    with open(stat) as f:
        lines = f.read().splitlines()
    total = [int(v) for v in lines[0].split()[1:]]
    return total, sum(1 for ln in lines if ln.startswith("cpu") and ln[3:4].isdigit())


def busy_cpus(stat: str = "/proc/stat", sample_s: float = 0.1) -> tuple[float, int] | None:
    """CPUs' worth of work other processes did over a short sample (this one sleeps through
    it), and the machine's CPUs; None where /proc/stat cannot be read."""
    try:
        before, cpus = _cpu_times(stat)
        time.sleep(sample_s)
        after, _ = _cpu_times(stat)
    except (OSError, ValueError, IndexError):
        return None
    delta = [a - b for a, b in zip(after, before)]
    total = sum(delta[:8])  # user nice system idle iowait irq softirq steal
    if total <= 0 or not cpus:
        return None
    return (total - delta[3] - delta[4]) / total * cpus, cpus


def choose(requested: int, cgroup: str = "/sys/fs/cgroup",
           stat: str = "/proc/stat") -> tuple[int, str]:
    """The intra-op thread count and why: --threads if given (> 0), else OMP_NUM_THREADS if
    set (Ray sets it to a trial's CPUs), else the CPUs this process may use (affinity and
    cgroup quota), less those other processes keep busy where no quota reserves them: two
    threads on two cores beside a busy neighbour take 2.4 times as long as one
    (docs/performance.md)."""
    if requested > 0:
        return requested, "--threads"
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    usable = usable_cpus(cgroup)
    why = f"{usable} CPU{'s' if usable > 1 else ''} this process may use"
    load = busy_cpus(stat) if usable > 1 and not _quota(cgroup) else None
    if load is not None:
        busy, cpus = load
        free = max(1, min(usable, math.floor(cpus - busy + 0.5)))
        if free < usable:
            return free, f"{why}, {usable - free} kept busy by other processes"
    return usable, why


def apply(requested: int) -> tuple[int, str]:
    """Set torch's intra-op threads as `choose` says; returns the count and the reason."""
    n, why = choose(requested)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n, why
