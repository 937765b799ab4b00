"""The trainings of a bench run in parallel, each in a fresh interpreter of its own (no forked
torch or DALI state), `jobs` at a time: started, waited for, and on a signal stopped with their
checkpoints, never left behind.

Each training runs in its own process group, so that Ctrl-C at the terminal reaches the bench
alone; the bench then asks each running training once (SIGTERM) to checkpoint and stop. Each
asks Linux for SIGTERM when the bench dies, SIGKILL included, so that none outlives it holding its
run directory. A training's output goes to its run directory (bench.log): the terminal shows the
bench's own lines only.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from pathlib import Path

import torch

from bench.training import LOG, Training, finished, run_training
from twocol.errors import TwocolError, one_line
from twocol.interrupt import Interrupted, StopFlag, exit_code


def _die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when the bench dies (SIGKILL included), so that a
    training never outlives it holding its run directory; it then checkpoints and stops."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the bench's own SIGTERM to its trainings still stops them


def _child(t: Training, data: Path, gpus: str | None, run_dir: Path, stamp: dict, threads: int | None) -> None:
    """One training in its own process: its own process group, so that Ctrl-C at the terminal
    reaches the bench alone, which then stops each training once; its output in its run
    directory (bench.log), so that the terminal shows the bench's lines only."""
    os.setpgrp()
    _die_with_parent()
    run_dir.mkdir(parents=True, exist_ok=True)
    log = os.open(run_dir / LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    if threads:
        torch.set_num_threads(threads)
    try:
        run_training(t, data, gpus, run_dir, stamp)
    except Interrupted as e:  # stopped with its checkpoint
        sys.exit(exit_code(e.signum))
    except TwocolError as e:
        print(f"bench/paper.py: {one_line(str(e))}", flush=True)
        sys.exit(2)
    sys.exit(0)


class Stop(StopFlag):
    """SIGINT and SIGTERM for the bench: the first stops starting trainings and asks each running
    one to checkpoint and stop (SIGTERM); a second stops the bench at once (Stopped; each training
    then gets its SIGTERM from the kernel as the bench dies)."""

    def __init__(self):
        super().__init__()
        self.running: dict = {}

    def _handle(self, signum, frame):
        first = self.signal is None
        super()._handle(signum, frame)
        if first:
            for proc in self.running:
                if proc.is_alive():
                    os.kill(proc.pid, signal.SIGTERM)


def run(todo: list[Training], jobs: int, threads: int | None, gpus: str | None, runs: Path, dirs: dict[str, Path],
        stamp: dict, on_result, stop: Stop) -> None:
    """Run the trainings `jobs` at a time, each in a fresh interpreter (no forked torch or DALI
    state); on_result(training, result, seconds its process took) as each finishes. Stops early on
    a signal or a failure."""
    ctx = multiprocessing.get_context("spawn")
    queue = list(todo)
    failed = None
    started: dict = {}
    while (queue and stop.signal is None and failed is None) or stop.running:
        while queue and stop.signal is None and failed is None and len(stop.running) < jobs:
            t = queue.pop(0)
            proc = ctx.Process(target=_child, args=(t, dirs[t.data], gpus, runs / t.name, stamp, threads),
                               name=t.name)
            proc.start()
            stop.running[proc] = t
            started[proc] = time.perf_counter()
        multiprocessing.connection.wait([p.sentinel for p in stop.running])
        for proc in [p for p in stop.running if not p.is_alive()]:
            t = stop.running.pop(proc)
            proc.join()
            if proc.exitcode == 0:
                on_result(t, finished(runs / t.name, stamp), time.perf_counter() - started.pop(proc))
            elif stop.signal is None and failed is None:
                failed = (t, proc.exitcode)
                for other in stop.running:
                    os.kill(other.pid, signal.SIGTERM)
    if failed is not None:
        t, code = failed
        log = runs / t.name / LOG
        last = next((l for l in reversed(log.read_text(errors="replace").splitlines()) if l.strip()), "") \
            if log.is_file() else ""
        raise TwocolError(f"training {t.name} failed (exit {code}): {last[:300]} (whole log: {log}); the other "
                          "trainings stopped with their checkpoints: fix it and run the same command again")
