"""Ctrl-C, as a terminal sends it (SIGINT to the whole process group), while the torch loader's
worker processes start: the workers leave signals to the main process, which stops with one
line and exit code 130. Real processes and real signals (slow); the moment between a worker's
fork and torch's own handling of signals, which a Ctrl-C hits by chance, is made four seconds
long so that every run hits it."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import train_args
from test_hostile_runs import ENV

# A terminal's foreground process takes Ctrl-C as Python's KeyboardInterrupt; a test runner
# started in the background of a script (`cmd &`) ignores SIGINT, and a child would inherit that.
SLOW_WORKER_START = textwrap.dedent("""
    import signal, sys, time
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import torch.utils.data._utils.worker as worker
    real = worker._worker_loop
    def slow(*args, **kwargs):
        print("WORKER STARTING", flush=True)
        time.sleep(4)
        return real(*args, **kwargs)
    worker._worker_loop = slow
    from twocol.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def ctrl_c(args, presses: int) -> tuple[int, str]:
    """Run `twocol ARGS` in its own process group and press Ctrl-C `presses` times, 1.5 s
    apart, as its first loader worker starts; (exit code, stderr). (While the main process
    forks its workers it holds signals, and two presses held together count as one.)"""
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WORKER_START, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True)
    try:
        for line in proc.stdout:
            if line.startswith("WORKER STARTING"):
                for press in range(presses):
                    if press:
                        time.sleep(1.5)
                    os.killpg(proc.pid, signal.SIGINT)
                break
        else:
            raise AssertionError(f"no loader worker started: {proc.communicate()[1][-2000:]}")
        _, err = proc.communicate(timeout=120)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the workers too, whatever happened
        except ProcessLookupError:
            pass
        proc.wait()
    return proc.returncode, err


@pytest.mark.slow
def test_ctrl_c_while_eval_ten_crop_starts_its_workers_is_one_line(tiny_set, trained_run):
    code, err = ctrl_c(["eval", "--ckpt", trained_run / "checkpoint.pt", "--data", tiny_set, "--gpus", "cpu",
                        "--threads", "1", "--ten-crop", "data.loader=torch", "data.workers=2"], presses=1)
    assert (code, err) == (130, "twocol: stopped by SIGINT\n")


@pytest.mark.slow
def test_ctrl_c_twice_while_an_epoch_starts_its_workers_is_one_line(tiny_set, tmp_path):
    # The first press asks for a stop at the next step; the second stops at once.
    code, err = ctrl_c(train_args(tiny_set, tmp_path / "run", "data.workers=1", "--threads", "1"), presses=2)
    assert (code, err) == (130, "twocol: stopped by SIGINT\n")
