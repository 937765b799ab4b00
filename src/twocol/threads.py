"""How many threads one process computes with (torch's intra-op pool: OpenMP, MKL, oneDNN).

The rule, first that applies: `--threads N`; the OMP_NUM_THREADS environment variable; else
the CPUs this process may run on: its CPU affinity (taskset, cpusets), lowered to its cgroup's
CPU quota (a container's --cpus, rounded down, at least 1). torch alone would take every core
of the host whatever the quota.

Idle threads must also sleep rather than spin: OpenMP's default lets a thread that waits for
work spin first, harmless alone but, with another process on the same cores, each burns the
other's time (README: two runs side by side). The CLI (twocol.cli) therefore sets
OMP_WAIT_POLICY=PASSIVE unless the user set it, before torch loads: OpenMP reads it only then.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import ConfigError


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _quota(folder: Path, version: int) -> float | None:
    """CPUs allowed by the quota file(s) in one cgroup folder, or None (no quota, no file)."""
    if version == 2:
        text = _read(folder / "cpu.max")
        parts = text.split() if text else []
        if len(parts) == 2 and parts[0] != "max":
            quota, period = parts
        else:
            return None
    else:
        quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    try:
        q, p = int(quota), int(period)
    except (TypeError, ValueError):
        return None
    return q / p if q > 0 and p > 0 else None


def cgroup_cpus(root: str | Path = "/sys/fs/cgroup", proc: str | Path = "/proc/self/cgroup") -> float | None:
    """The CPU quota of this process's cgroup and its ancestors (the lowest), in CPUs, or None."""
    root = Path(root)
    text = _read(Path(proc))
    if text is None:
        return None
    limits = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        rel = Path(path.lstrip("/"))
        if controllers == "":  # cgroup v2: one tree, mounted at root (or root/unified, hybrid)
            mounts, version = [root, root / "unified"], 2
        elif "cpu" in controllers.split(","):
            mounts, version = [root / controllers, root / "cpu"], 1
        else:
            continue
        for mount in mounts:
            folder = mount / rel
            while True:
                q = _quota(folder, version)
                if q is not None:
                    limits.append(q)
                if folder == mount or mount not in folder.parents:
                    break
                folder = folder.parent
    return min(limits) if limits else None


def available_cpus() -> tuple[int, str]:
    """(CPUs this process may use, where that figure comes from)."""
    try:
        cpus, why = len(os.sched_getaffinity(0)), "CPU affinity"
    except AttributeError:  # not Linux
        cpus, why = os.cpu_count() or 1, "cores"
    quota = cgroup_cpus()
    if quota is not None and int(quota) < cpus:
        cpus, why = max(1, int(quota)), f"cgroup CPU quota {quota:g}"
    return cpus, why


def choose_threads(requested: int | None = None) -> tuple[int, str]:
    """(threads, why) by the rule of the module docstring."""
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"--threads must be at least 1, got {requested}")
        return requested, "--threads"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        if not (env.isascii() and env.isdigit() and int(env) >= 1):
            raise ConfigError(f"OMP_NUM_THREADS={env[:20]!r} is not a whole number >= 1")
        return int(env), "OMP_NUM_THREADS"
    return available_cpus()


def set_threads(requested: int | None = None) -> str:
    """Apply the choice to torch; returns it in words, for the log."""
    n, why = choose_threads(requested)
    torch.set_num_threads(n)
    return f"{n} compute thread(s) ({why})"
