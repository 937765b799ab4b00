"""Training end to end on tiny synthetic sets, through the CLI as a user runs it: in this process
(conftest's twocol_in_process) where the process boundary is not what is tested, in a child
process where it is (SIGKILL, SIGTERM)."""
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from twocol.checkpoint import load_checkpoint
from twocol.data.synth import synthesize

from conftest import TINY_TRAIN, one_line_error, train_args, twocol_in_process as twocol


@pytest.fixture(scope="module")
def learning_data(tmp_path_factory):
    """Large enough to learn on: 300 training and 50 validation images per class (38 steps an
    epoch); the session's tiny_set (5 steps an epoch) is for checkpoints, not learning."""
    return synthesize(tmp_path_factory.mktemp("data") / "synth", classes=4, per_class=300, image_size=44,
                      val_per_class=50, workers=2)


def train_cmd(data, run_dir, *extra):
    return [sys.executable, "-m", "twocol", "train", "--gpus", "cpu", "--data", str(data), "--run-dir", str(run_dir),
            *TINY_TRAIN, *extra]


def twocol_ok(*args, **kw):
    r = subprocess.run(list(args), capture_output=True, text=True, **kw)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def epochs_logged(run_dir):
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "epoch"]


def test_a_short_run_learns_and_its_checkpoint_reproduces_the_logged_error(learning_data, tmp_path, capsys):
    run = tmp_path / "run"
    # Measured here (AMD EPYC): 54.0% after 3 epochs, 37.0% after 10 (chance: 75%).
    code, _, err = twocol(capsys, *train_args(learning_data, run, "train.epochs=10", "train.log_every=10",
                                              "--check-isolation"))
    assert code == 0, err
    epochs = epochs_logged(run)
    assert len(epochs) == 10
    assert epochs[-1]["val_top1_error"] < 0.55, [e["val_top1_error"] for e in epochs]
    assert (run / "curves.png").stat().st_size > 0
    steps = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"step"' in l[:20]]
    assert set(steps[0]["link_bytes"]) == {"conv3", "fc6", "fc7", "fc8"}
    code, out, err = twocol(capsys, "eval", "--ckpt", run / "checkpoint.pt", "--data", learning_data, "--gpus", "cpu",
                            "--json", "data.loader=torch", "data.workers=0")
    assert code == 0, err
    result = json.loads(out)
    assert result["top1_error"] == epochs[-1]["val_top1_error"]
    assert result["top5_error"] == epochs[-1]["val_top5_error"]
    assert result["images"] == 4 * 50


def final_weights(run_dir):
    return load_checkpoint(run_dir / "checkpoint.pt")["model"]


@pytest.mark.slow
def test_two_epochs_equal_one_epoch_kill_resume_one_epoch_bit_for_bit(learning_data, tmp_path):
    straight = tmp_path / "straight"
    twocol_ok(*train_cmd(learning_data, straight, "train.epochs=2"))

    killed = tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(learning_data, killed, "train.epochs=2"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (killed / "checkpoint.pt").exists():
        time.sleep(0.02)  # the first checkpoint is written at the end of epoch 1
    assert proc.poll() is None, "the run ended before it could be killed in epoch 2"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert load_checkpoint(killed / "checkpoint.pt")["epoch"] == 1
    twocol_ok(sys.executable, "-m", "twocol", "train", "--resume", str(killed / "checkpoint.pt"), "--gpus", "cpu",
              "--data", str(learning_data))
    a, b = final_weights(straight), final_weights(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_sigterm_writes_a_mid_epoch_checkpoint_that_resumes(learning_data, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(learning_data, run, "train.epochs=50"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "metrics.jsonl").exists() and '"step"' in (run / "metrics.jsonl").read_text()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]  # 128 + SIGTERM
    assert "continue with --resume" in out
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["batch"] > 0 or ckpt["epoch"] > 0
    twocol_ok(sys.executable, "-m", "twocol", "train", "--resume", str(run / "checkpoint.pt"), "--gpus", "cpu",
              "--data", str(learning_data), "train.epochs=" + str(ckpt["epoch"] + 1))
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == ckpt["epoch"] + 1


def test_a_non_finite_loss_stops_the_run_with_a_clear_message(tiny_set, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = twocol(capsys, *train_args(tiny_set, run, "train.epochs=2", "optim.lr=1e12"))
    assert code == 3
    assert "non-finite" in err and "no checkpoint was written yet" in err
    assert "Traceback" not in err
    assert not (run / "checkpoint.pt").exists()


def test_resume_refuses_a_checkpoint_of_another_architecture(tiny_set, trained_run, tmp_path, capsys):
    ckpt = trained_run / "checkpoint.pt"
    before = ckpt.read_bytes()
    code, _, err = twocol(capsys, *train_args(tiny_set, tmp_path / "other", "train.epochs=2", "model.fc_widths=[32,32]",
                                              "--resume", ckpt))
    one_line_error(code, err, "another architecture: model.fc_widths")
    assert ckpt.read_bytes() == before


def test_a_layer_step_freezes_conv1_and_a_resumed_run_keeps_it_frozen(tiny_set, tmp_path, capsys):
    run = tmp_path / "run"
    freeze = "schedule.layer_steps=[{layer: conv1, epoch: 1, weight_lr: 0, bias_lr: 0}]"
    assert twocol(capsys, *train_args(tiny_set, run, "train.epochs=1", freeze))[0] == 0
    before = final_weights(run)
    assert twocol(capsys, "train", "--resume", run / "checkpoint.pt", "--gpus", "cpu", "--data", tiny_set,
                  "train.epochs=2")[0] == 0
    after = final_weights(run)
    assert [k for k in after if not torch.equal(before[k], after[k])] == [
        k for k in after if ".conv1." not in k]  # every layer but conv1 learnt in epoch 2
