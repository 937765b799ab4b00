"""A run stopped mid-epoch and resumed ends exactly where an uninterrupted one ends, with either
loader: weights, velocities and every RNG state equal to the bit, after SIGTERM, SIGINT, SIGKILL
and a stop for bad images. The loaders never draw from the generators that training uses
(dropout is on here, so a single extra draw would change every later mask)."""
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from twocol.checkpoint import load_checkpoint
from twocol.cli import main
from twocol.data import base
from twocol.data import loader as loader_module
from twocol.data.layout import CHECKSUMS
from twocol.data.loader import make_loader
from twocol.data.synth import synthesize
from twocol.devices import Placement
from twocol.lock import DirLock

from conftest import LOADER_BACKENDS, config

# 64 training images in batches of 16: 4 steps an epoch; dropout on.
BATCH, EPOCHS = 16, 2
TINY = ["-c", "configs/tiny_twocol.yaml", "model.num_classes=4", f"data.batch_size={BATCH}", "model.dropout=0.5",
        "train.log_every=4", "data.workers=0", f"train.epochs={EPOCHS}"]
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("data") / "s", classes=4, per_class=16, image_size=44,
                      val_per_class=4, workers=1)


def args(data, run, backend, *extra):
    return ["train", "--gpus", "cpu", "--threads", "1", "--data", str(data), "--run-dir", str(run), *TINY,
            f"data.loader={backend}", *extra]


def resume_args(run, data, *extra):
    return ["train", "--resume", str(run / "checkpoint.pt"), "--gpus", "cpu", "--threads", "1", "--data", str(data),
            *extra]


def differences(a: dict, b: dict) -> dict:
    """The largest absolute difference between two checkpoints' weights, velocities and RNG
    states (each state's words compared as numbers)."""
    def groups(ckpt):
        rng = ckpt["rng"]
        return {"weights": list(ckpt["model"].values()),
                "velocities": [s["velocity"] for s in ckpt["optimizer"]["state"].values()],
                "rng": [rng["torch"], rng["numpy"]["keys"], torch.tensor([rng["numpy"]["pos"]]),
                        torch.tensor(rng["python"])]}

    ga, gb = groups(a), groups(b)
    return {k: max(float((x.double() - y.double()).abs().max()) for x, y in zip(ga[k], gb[k], strict=True))
            for k in ga}


SAME = {"weights": 0.0, "velocities": 0.0, "rng": 0.0}


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    """The uninterrupted run's final checkpoint, per loader."""
    done = {}

    def get(backend):
        if backend not in done:
            run = tmp_path_factory.mktemp("straight") / backend
            assert main(args(data, run, backend)) == 0
            done[backend] = load_checkpoint(run / "checkpoint.pt")
        return done[backend]

    return get


def signal_at(monkeypatch, epoch, batch, signum):
    """Send `signum` to this process while the training loader hands out batch `batch` of epoch
    `epoch` (0-based): the run stops after that batch's step, as it would for a user's Ctrl-C."""
    real = base.Loader.epoch

    def epoch_with_signal(self, e, start_batch=0):
        for b, item in enumerate(real(self, e, start_batch), start_batch):
            if self.train and (e, b) == (epoch, batch):
                os.kill(os.getpid(), signum)
            yield item

    monkeypatch.setattr(base.Loader, "epoch", epoch_with_signal)


@pytest.mark.parametrize("backend", LOADER_BACKENDS)
@pytest.mark.parametrize("signum,code,epoch,batch", [(signal.SIGTERM, 143, 0, 1), (signal.SIGINT, 130, 1, 2)])
def test_a_run_stopped_by_a_signal_mid_epoch_resumes_bit_for_bit(data, straight, tmp_path, monkeypatch, backend,
                                                                 signum, code, epoch, batch):
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        signal_at(m, epoch, batch, signum)
        assert main(args(data, run, backend)) == code
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert (ckpt["epoch"], ckpt["batch"]) == (epoch, batch + 1)
    assert main(resume_args(run, data)) == 0
    assert differences(load_checkpoint(run / "checkpoint.pt"), straight(backend)) == SAME


def break_one_image(data, backend, epoch, batch):
    """Remove the checksums (so a bad image is found while reading) and break the first image
    of batch `batch` of epoch `epoch`'s plan: a run with data.max_bad_fraction=0.01 stops there."""
    (data / CHECKSUMS).unlink()
    ld = make_loader(config("tiny_twocol", "model.num_classes=4", f"data.batch_size={BATCH}", "data.workers=0"),
                     data, "train", Placement.parse("cpu"), train=True, seed=0, backend=backend)
    rel = ld.files[int(ld.plan(epoch).index[ld.plan(epoch).batch(batch).start])]
    (data / rel).write_bytes(b"not a jpeg")


@pytest.mark.slow
@pytest.mark.parametrize("backend", LOADER_BACKENDS)
def test_a_run_stopped_for_bad_images_resumes_bit_for_bit(data, tmp_path, backend):
    bad = shutil.copytree(data, tmp_path / "bad")
    break_one_image(bad, backend, 0, 2)
    straight_run, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main(args(bad, straight_run, backend, "data.max_bad_fraction=0.5")) == 0
    assert main(args(bad, stopped, backend)) == 2  # one bad image in 64 is over the default 1%
    ckpt = load_checkpoint(stopped / "checkpoint.pt")
    assert (ckpt["epoch"], ckpt["batch"]) == (0, 2)
    assert main(resume_args(stopped, bad, "data.max_bad_fraction=0.5")) == 0
    assert differences(load_checkpoint(stopped / "checkpoint.pt"),
                       load_checkpoint(straight_run / "checkpoint.pt")) == SAME


@pytest.mark.parametrize("backend", LOADER_BACKENDS)
@pytest.mark.parametrize("workers", [0, 2])
def test_an_epoch_of_either_loader_draws_from_no_global_generator(data, backend, workers):
    cfg = config("tiny_twocol", "model.num_classes=4", f"data.batch_size={BATCH}", f"data.workers={workers}")
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    for train, split in ((True, "train"), (False, "val")):
        ld = make_loader(cfg, data, split, Placement.parse("cpu"), train=train, seed=0, backend=backend)
        assert sum(1 for _ in ld.epoch(0)) == len(ld)
        assert sum(1 for _ in ld.epoch(1 if train else 0, start_batch=1)) == len(ld) - 1
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1]) and random.getstate() == before[2]


@pytest.mark.skipif(loader_module.dali_problem("cpu") is not None, reason="DALI does not run here")
def test_on_identical_batches_dali_and_torch_take_identical_steps(straight):
    assert differences(straight("dali"), straight("torch")) == SAME


# A training that stops at a chosen batch and waits there for a signal from the test, which
# then lets it go on: a real signal from another process, arriving between two steps.
PAUSING = textwrap.dedent("""
    import sys
    from twocol.data import base
    from twocol.cli import main
    epoch, batch = int(sys.argv[1]), int(sys.argv[2])
    real = base.Loader.epoch
    def paused(self, e, start_batch=0):
        for b, item in enumerate(real(self, e, start_batch), start_batch):
            if self.train and (e, b) == (epoch, batch):
                print("PAUSED", flush=True)
                sys.stdin.readline()
            yield item
    base.Loader.epoch = paused
    sys.exit(main(sys.argv[3:]))
""")


@pytest.mark.slow
@pytest.mark.parametrize("backend", LOADER_BACKENDS)
@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGKILL, -9)])
def test_a_process_sent_a_signal_mid_epoch_resumes_bit_for_bit(data, straight, tmp_path, backend, signum, code):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", PAUSING, "1", "2", *args(data, run, backend, "data.workers=1")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        for line in proc.stdout:
            if line.startswith("PAUSED"):
                break
        proc.send_signal(signum)
        with contextlib.suppress(BrokenPipeError):  # SIGKILL: nobody reads it
            proc.stdin.write("go\n")
            proc.stdin.flush()
        proc.wait(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == code, proc.stderr.read()[-2000:]
    ckpt = load_checkpoint(run / "checkpoint.pt")
    # SIGKILL leaves the end of epoch 1's checkpoint; the others write one after the step.
    assert (ckpt["epoch"], ckpt["batch"]) == ((1, 0) if signum == signal.SIGKILL else (1, 3))
    r = subprocess.run([sys.executable, "-m", "twocol", *resume_args(run, data)], capture_output=True, text=True,
                       env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    assert differences(load_checkpoint(run / "checkpoint.pt"), straight(backend)) == SAME


# Holds a run directory's lock, as `twocol train` does, with a forked child (as a DataLoader
# worker is) that outlives it.
FORKED_HOLDER = textwrap.dedent("""
    import os, sys, time
    from twocol.lock import DirLock
    DirLock(sys.argv[1], "run directory").acquire()
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    print(child, flush=True)
    time.sleep(60)
""")


def test_a_killed_runs_forked_children_do_not_keep_its_run_directory_locked(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", FORKED_HOLDER, str(run)], stdout=subprocess.PIPE, text=True, env=ENV)
    child = int(proc.stdout.readline())
    try:
        proc.kill()
        proc.wait()
        os.kill(child, 0)  # the orphaned child still runs ...
        with DirLock(run, "run directory"):  # ... and the folder is free at once
            assert (run / ".lock").read_text().strip() == str(os.getpid())
    finally:
        os.kill(child, signal.SIGKILL)
