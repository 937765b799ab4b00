"""A run's directory: held by one process at a time for as long as it writes there, and never
one that holds another run's checkpoint or log."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .atomic import remove_stale_temps
from .distributed import World
from .errors import CheckpointError
from .lock import DirLock


@contextlib.contextmanager
def claim_run_dir(run_dir: Path, resume: Path | None, world: World):
    """Hold `run_dir` for this run (rank 0 does, under torchrun): another process asking for it
    gets a LockError naming our pid. Temporary files of a save that was killed are removed; a
    new run (no `resume`) refuses a directory that holds a checkpoint, and so does a resumed
    one, unless that checkpoint is the one it resumes; a run resumed into another directory
    also refuses one that holds a metrics.jsonl (the log of a run that wrote no checkpoint)."""
    if not world.is_main:
        yield
        return
    with DirLock(run_dir, "run directory"):
        remove_stale_temps(run_dir)
        ckpt = run_dir / "checkpoint.pt"
        if resume is None and ckpt.exists():
            raise CheckpointError(f"{run_dir} holds the checkpoint of an earlier run: continue it with "
                                  f"--resume {ckpt}, or give another --run-dir")
        if resume is not None and ckpt.exists() and not same_file(ckpt, resume):
            raise CheckpointError(f"{run_dir} holds the checkpoint of another run, which continuing {resume} there "
                                  f"would replace; give another --run-dir")
        log = run_dir / "metrics.jsonl"
        if resume is not None and not ckpt.exists() and log.exists() and not same_file(run_dir, resume.parent):
            raise CheckpointError(f"{run_dir} holds {log.name} (of another run, without a checkpoint), which continuing "
                                  f"{resume} there would replace; give another --run-dir")
        yield


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
