"""How many threads one process computes with (torch's intra-op pool: OpenMP, MKL, oneDNN).

The rule, first that applies: `--threads N`; the OMP_NUM_THREADS environment variable; else
the CPUs this process may run on: its CPU affinity (taskset, cpusets), lowered to its cgroup's
CPU quota (a container's --cpus, rounded down, at least 1). torch alone would take every core
of the host whatever the quota.

Idle threads must also sleep rather than spin: OpenMP's default lets a thread that waits for
work spin first, harmless alone but, with another process on the same cores, each burns the
other's time (docs/guarantees.md: two runs side by side). The CLI (twocol.cli) therefore sets
OMP_WAIT_POLICY=PASSIVE unless the user set it, before torch loads: OpenMP reads it only then.

No count may exceed those CPUs: a thread count above them (`--threads`, OMP_NUM_THREADS) or a
worker count (`data.workers`, `prepare --workers`, `synth --workers`) is lowered to them with
one line on stderr, `at_most_cpus`. More threads than CPUs only take turns on them, and torch
told to use 100,000 crashed here (a segmentation fault). A count below the least that means
something is refused (ConfigError, exit 2).
OMP_NUM_THREADS itself is harmless at torch's import (its OpenMP caps the value it reads to the
CPUs); only the count torch is then told to use matters (twocol.commands.common.set_threads). A
value that is no count is refused: the CLI checks it before torch loads, since OpenMP prints
its own complaint of it then. This module does not import torch, so that it can.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

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


@functools.lru_cache(maxsize=None)
def note(text: str) -> None:
    """Print `text` on stderr, once per process (a setting met by two loaders is told once)."""
    print(f"twocol: {text}", file=sys.stderr, flush=True)


def at_most_cpus(n: int, what: str) -> int:
    """`n` (of `what`: '--threads 64'), lowered to the CPUs this process may use, saying so."""
    cpus, why = available_cpus()
    if n <= cpus:
        return n
    note(f"{what} is more than the {cpus} CPU(s) this process may use ({why}): using {cpus}")
    return cpus


def choose_threads(requested: int | None = None) -> tuple[int, str]:
    """(threads, why) by the rule of the module docstring."""
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"--threads must be at least 1, got {requested}")
        return at_most_cpus(requested, f"--threads {requested}"), "--threads"
    n = omp_num_threads()
    if n is not None:
        env = os.environ["OMP_NUM_THREADS"].strip()
        shown = env if len(env) <= 20 else env[:17] + "..."
        return at_most_cpus(n, f"OMP_NUM_THREADS={shown}"), "OMP_NUM_THREADS"
    return available_cpus()


def omp_num_threads() -> int | None:
    """The count OMP_NUM_THREADS asks for (None when it is unset or empty); a value that is no
    whole number >= 1 is a ConfigError."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not env:
        return None
    if not (env.isascii() and env.isdigit() and env.strip("0")):
        raise ConfigError(f"OMP_NUM_THREADS={env[:20]!r} is not a whole number >= 1")
    # Any count of 19 digits or more is as absurd as 10**18 (and int() refuses 4,300 digits).
    return int(env) if len(env) < 19 else 10 ** 18
