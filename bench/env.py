"""What a benchmark ran on, for its results file."""
from __future__ import annotations

import datetime
import json
import platform
import subprocess
from pathlib import Path

import torch

from twocol.atomic import atomic_write
from twocol.provenance import commit_fields


def environment() -> dict:
    """The date, commit (null with commit_missing saying why where the tree has no .git and no
    commit was named: twocol.provenance), torch, CPU, threads, GPU and DALI."""
    def cmd(*args):
        try:
            return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    cpu = next((l.split(":", 1)[1].strip() for l in cmd("cat", "/proc/cpuinfo").splitlines()
                if l.startswith("model name")), platform.processor())
    env = {"date": datetime.date.today().isoformat(), **commit_fields(),
           "torch": torch.__version__, "cpu": cpu, "threads": torch.get_num_threads(),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        import nvidia.dali
        env["dali"] = nvidia.dali.__version__
    except ImportError:
        env["dali"] = None
    return env


def write_result(result: dict, out) -> None:
    """Every benchmark's results file: JSON, folders made as needed, written atomically (a run
    stopped mid-write keeps the previous results)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps(result, indent=2) + "\n")
