"""Hostile cases of run directories and checkpoints: tampered fields,
a save that fails, leftovers of a killed run, two processes in one directory, signals during a
save. Every one must end in its recovery, or in exit code 2 and one line naming what is wrong."""
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from twocol.checkpoint import load_checkpoint
from twocol.cli import main
from twocol.lock import DirLock

from conftest import one_line_error, train_args, twocol_in_process as twocol

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}


@pytest.fixture
def data(tiny_set):
    """160 training images: 5 batches of 32 per epoch (read-only)."""
    return tiny_set


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A copy of the session's run of one finished epoch (5 steps)."""
    return shutil.copytree(trained_run, tmp_path / "run")


def tamper(path, change):
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    torch.save(ckpt, path)


@pytest.mark.parametrize("change,needles", [
    (lambda c: c.pop("optimizer"), ["optimizer is missing"]),
    (lambda c: c["optimizer"]["state"][0].update(velocity=torch.zeros(3)),
     ["optimizer.state[0].velocity", "col_a.conv1.weight", "shape (8, 3, 5, 5)"]),
    (lambda c: c["optimizer"]["param_groups"][0].update(momentum="fast"), ["optimizer.param_groups[0].momentum"]),
    (lambda c: c["rng_per_rank"][0].update(torch=torch.zeros(7, dtype=torch.uint8)), ["rng_per_rank[0].torch"]),
    (lambda c: c["rng_per_rank"][0]["python"].pop(), ["rng_per_rank[0].python"]),
    (lambda c: c.update(batch=999), ["batch must be a whole number in 0..5", "999"]),
    (lambda c: c.update(epoch=-5), ["epoch must be a whole number in 0..1,000,000", "-5"]),
    (lambda c: c.update(step="many"), ["step must be a whole number"]),
    (lambda c: c["schedule"].pop("drops"), ["schedule must hold drops"]),
    (lambda c: c["model"].update({"col_b.fc6.weight": torch.zeros(64, 7)}),
     ["model.col_b.fc6.weight has shape (64, 7), this net's is (512, 32)"]),
    (lambda c: c["model"].pop("fc8.bias"), ["model.fc8.bias is missing"]),
    (lambda c: c["model"]["fc8.bias"].fill_(float("nan")), ["model.fc8.bias holds non-finite values"]),
])
def test_a_tampered_checkpoint_field_is_named(data, run_copy, capsys, change, needles):
    ckpt = run_copy / "checkpoint.pt"
    tamper(ckpt, change)
    code, _, err = twocol(capsys, "train", "--resume", ckpt, "--gpus", "cpu", "--threads", "1", "--data", data,
                          "train.epochs=2")
    one_line_error(code, err, str(ckpt), *needles)


def test_a_mid_epoch_checkpoint_refuses_an_override_that_changes_the_rest_of_its_epoch(data, trained_run, run_copy,
                                                                                       tmp_path, capsys):
    ckpt = run_copy / "checkpoint.pt"
    tamper(ckpt, lambda c: c.update(batch=2, step=7))  # stopped after batch 2 of epoch 2 (5 batches of 32)
    kept = {p.name: p.read_bytes() for p in run_copy.iterdir()}
    resume = ["train", "--resume", ckpt, "--gpus", "cpu", "--threads", "1", "--data", data, "train.epochs=2"]
    for override, shown in [("data.batch_size=16", "data.batch_size=16 (32 in"), ("train.seed=7", "train.seed=7 (0 in"),
                            ("data.lighting_std=0", "data.lighting_std=0.0 (0.1 in"),
                            ("data.crop_chunk=4", "data.crop_chunk=4 (1 in")]:
        code, _, err = twocol(capsys, *resume, override)
        one_line_error(code, err, f"{ckpt} was written mid-epoch (epoch 2, batch 2 of 5): {shown} the checkpoint) would "
                                  "change the rest of that epoch; resume without it to the epoch's end (train.epochs=2)")
        assert {p.name: p.read_bytes() for p in run_copy.iterdir()} == kept
    code, _, err = twocol(capsys, *resume, "data.max_bad_fraction=0.5")  # not in the epoch's plan: applied
    assert code == 0 and load_checkpoint(ckpt)["step"] == 10, err
    # At an epoch's end the next epoch's plan is not begun: the batch size may change.
    ended = shutil.copytree(trained_run, tmp_path / "ended")
    code, _, err = twocol(capsys, "train", "--resume", ended / "checkpoint.pt", "--gpus", "cpu", "--threads", "1",
                          "--data", data, "train.epochs=2", "data.batch_size=16")
    assert code == 0 and load_checkpoint(ended / "checkpoint.pt")["step"] == 15, err


def test_resume_cleans_stale_temps_and_keeps_metrics_consistent_with_the_checkpoint(data, run_copy, capsys):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = run_copy / f".checkpoint.pt.tmp-{dead.pid}"
    stale.write_bytes(b"\0" * 4096)  # what a save killed with SIGKILL leaves
    metrics = run_copy / "metrics.jsonl"
    with open(metrics, "a") as f:  # work after the checkpoint (killed in epoch 2), then a torn line
        f.write(json.dumps({"kind": "step", "epoch": 2, "batch": 2, "step": 7, "loss": 9.0}) + "\n")
        f.write('{"kind": "step", "epoch": 2, "ba')
    code, out, err = twocol(capsys, "train", "--resume", run_copy / "checkpoint.pt", "--gpus", "cpu",
                            "--threads", "1", "--data", data, "train.epochs=2")
    assert code == 0, err
    assert not stale.exists()
    assert "done: val top-1 error" in out
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]  # every line whole
    steps = [r["step"] for r in rows if r["kind"] == "step"]
    assert steps == sorted(set(steps)) and 9.0 not in [r.get("loss") for r in rows]
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1, 2]
    assert (run_copy / "curves.png").stat().st_size > 0
    assert load_checkpoint(run_copy / "checkpoint.pt")["step"] == 10


def test_end_of_run_plot_survives_a_torn_last_line(data, tmp_path, capsys, monkeypatch):
    import twocol.commands.train as command

    def torn_then_plot(metrics, out):
        with open(metrics, "a") as f:
            f.write('{"kind": "epoch", "ep')  # as if a crash had cut the last append
        return real(metrics, out)

    real = command.plot_run
    monkeypatch.setattr(command, "plot_run", torn_then_plot)
    code, out, err = twocol(capsys, *train_args(data, tmp_path / "run", "train.epochs=1"))
    assert code == 0 and "curves" in out and "not drawn" not in out, out + err


def test_a_new_run_refuses_a_directory_holding_a_checkpoint(data, run_copy, capsys):
    before = (run_copy / "checkpoint.pt").read_bytes()
    code, _, err = twocol(capsys, *train_args(data, run_copy, "train.epochs=1"))
    one_line_error(code, err, "holds the checkpoint of an earlier run", "--resume")
    assert (run_copy / "checkpoint.pt").read_bytes() == before


def test_batch_larger_than_the_training_set_is_refused(data, tmp_path, capsys):
    code, _, err = twocol(capsys, *train_args(data, tmp_path / "run", "data.batch_size=1000"))
    one_line_error(code, err, "data.batch_size=1000 is larger than the 160 training image(s)")


HOLDER = "import sys, time; from twocol.lock import DirLock; DirLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)"


@pytest.fixture
def holder():
    """Holds the lock of a folder from another process, like a twocol run would."""
    procs = []

    def hold(folder):
        p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True, env=ENV)
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        return p

    yield hold
    for p in procs:
        p.kill()
        p.wait()


def test_one_process_at_a_time_in_a_run_directory_or_a_dataset(data, tmp_path, capsys, holder):
    run = tmp_path / "run"
    owner = holder(run)
    code, _, err = twocol(capsys, *train_args(data, run, "train.epochs=1"))
    one_line_error(code, err, f"run directory {run} is in use by pid {owner.pid}")
    assert not (run / "metrics.jsonl").exists() and not (run / "config.json").exists()

    dst = tmp_path / "set"
    owner = holder(dst)
    code, _, err = twocol(capsys, "synth", dst, "--classes", "2", "--per-class", "1", "--workers", "1")
    one_line_error(code, err, f"dataset {dst} is in use by pid {owner.pid}")

    owner.kill()  # a holder killed with SIGKILL leaves no stale lock
    owner.wait()
    with DirLock(dst, "dataset"):
        assert (dst / ".lock").read_text().strip() == str(os.getpid())
    assert not (dst / ".lock").exists()


@contextlib.contextmanager
def files_at_most(size):
    """A full disk, as the OS reports it: a write past `size` bytes fails with EFBIG."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_a_failed_save_exits_2_with_the_reason_and_keeps_the_previous_checkpoint(data, run_copy, capsys):
    ckpt = run_copy / "checkpoint.pt"
    before = ckpt.read_bytes()
    with files_at_most(len(before) // 2):
        code, _, err = twocol(capsys, "train", "--resume", ckpt, "--gpus", "cpu", "--threads", "1", "--data", data,
                              "train.epochs=2")
    one_line_error(code, err, f"cannot write {ckpt}: File too large", "previous checkpoint is unchanged")
    assert ckpt.read_bytes() == before
    rows = [json.loads(line) for line in (run_copy / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["kind"] == "epoch"] == [1]  # epoch 2 is not claimed
    assert sorted(p.name for p in run_copy.iterdir()) == ["checkpoint.pt", "config.json", "curves.png", "metrics.jsonl"]


# A training whose checkpoint saves take half a second, announced on stdout, so that signals can be
# sent while one is being written.
SLOW_SAVES = textwrap.dedent("""
    import sys, time, torch
    real = torch.save
    def slow(obj, f):
        print("SAVING", flush=True)
        time.sleep(0.5)
        real(obj, f)
    torch.save = slow
    from twocol.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.slow
def test_a_second_signal_during_a_save_lets_it_finish(data, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVES, *map(str, train_args(data, run, "train.epochs=5")),
                             "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    seen = []
    try:
        def wait_for_save():
            for line in proc.stdout:
                if line.startswith("SAVING"):
                    return
                seen.append(line)
            raise AssertionError("the run ended before saving")

        wait_for_save()  # the end of epoch 1
        proc.send_signal(signal.SIGINT)  # held during the save; the run stops after its next step
        wait_for_save()  # the stop's own save
        time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # a second signal inside that save: it still finishes
        out, err = proc.communicate(timeout=120)
        out = "".join(seen) + out
    finally:
        proc.kill()
    assert proc.returncode == 130, err  # 128 + SIGINT, the signal that stopped the run
    assert "Traceback" not in err and "continue with --resume" in out, err
    assert ", 1 compute thread(s), " in out  # the training log line says the thread count
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert (ckpt["epoch"], ckpt["batch"], ckpt["step"]) == (1, 1, 6)


def test_signals_map_to_128_plus_their_number_and_a_save_is_shielded(monkeypatch, capsys):
    from twocol.commands import describe
    from twocol.interrupt import Stopped, StopFlag, exit_code, shielded

    with StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGTERM)  # the first: a flag the loop reads between steps
        assert stop.signal == signal.SIGTERM and exit_code(stop.signal) == 143
        with shielded():
            os.kill(os.getpid(), signal.SIGINT)  # a second one inside a save does not break it
        with pytest.raises(Stopped) as stopped:
            os.kill(os.getpid(), signal.SIGINT)  # outside a save it stops at once
    assert exit_code(stopped.value.signum) == 130

    def stopped_by_sigterm(args):
        raise Stopped(signal.SIGTERM)

    monkeypatch.setattr(describe, "run", stopped_by_sigterm)
    assert main(["describe"]) == 143
    assert capsys.readouterr().err == "twocol: stopped by SIGTERM\n"
