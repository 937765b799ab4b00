"""`--resume` alone continues a run as it was started (its dataset and devices, recorded in the
checkpoint), into another run directory too, and `eval` alone evaluates on that dataset; both
apply the overrides that keep the checkpoint's net and refuse the others by name; a checkpoint's
position is bounded; a checkpoint used on a dataset of other classes (train --resume, eval,
features) is refused, naming the first class that differs."""
import shutil

import pytest
import torch

from twocol.checkpoint import load_checkpoint
from twocol.cli import main
from twocol.data.layout import CLASSES
from twocol.data.synth import synthesize

from conftest import one_line_error, twocol_in_process as twocol
from test_hostile_runs import tamper

TINY = ["-c", "configs/tiny_twocol.yaml", "model.num_classes=4", "data.batch_size=16", "data.loader=torch",
        "data.workers=0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("data") / "s", classes=4, per_class=8, image_size=44,
                      val_per_class=2, workers=1)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A finished run of one epoch on the 4-class set, with --data and --gpus given."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "--gpus", "cpu", "--threads", "1", "--data", str(data), "--run-dir", str(run), *TINY,
                 "train.epochs=1"]) == 0
    return run


@pytest.fixture
def run(trained, tmp_path):
    return shutil.copytree(trained, tmp_path / "run")


def test_a_checkpoint_records_the_runs_dataset_devices_and_classes(data, trained):
    ckpt = load_checkpoint(trained / "checkpoint.pt")
    assert ckpt["origin"] == {"data": str(data.resolve()), "gpus": "cpu"}
    assert ckpt["classes"] == (data / CLASSES).read_text().splitlines()


def test_resume_alone_continues_on_the_runs_dataset(run, capsys):
    code, out, err = twocol(capsys, "train", "--resume", run / "checkpoint.pt", "--threads", "1", "train.epochs=2")
    assert code == 0, err
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 2


def test_resume_alone_continues_on_the_runs_devices(run, capsys):
    tamper(run / "checkpoint.pt", lambda c: c["origin"].update(gpus="5,6"))  # as if started with --gpus 5,6
    code, _, err = twocol(capsys, "train", "--resume", run / "checkpoint.pt", "--threads", "1", "train.epochs=2")
    one_line_error(code, err, "--gpus '5,6'")


def test_resume_of_a_moved_dataset_names_the_recorded_path(data, run, tmp_path, capsys):
    moved = shutil.copytree(data, tmp_path / "copy")
    tamper(run / "checkpoint.pt", lambda c: c["origin"].update(data=str(tmp_path / "gone")))
    code, _, err = twocol(capsys, "train", "--resume", run / "checkpoint.pt", "--threads", "1", "train.epochs=2")
    one_line_error(code, err, f"dataset {tmp_path / 'gone'}, which is not there any more", "--data")
    code, _, err = twocol(capsys, "train", "--resume", run / "checkpoint.pt", "--threads", "1", "--data", moved,
                          "train.epochs=2")
    assert code == 0, err


def test_resume_into_a_new_run_directory_writes_its_checkpoint_there(run, tmp_path, capsys):
    new = tmp_path / "new"
    code, out, err = twocol(capsys, "train", "--resume", run / "checkpoint.pt", "--threads", "1", "--run-dir", new)
    assert code == 0 and f"checkpoint {new / 'checkpoint.pt'}" in out, err
    a, b = load_checkpoint(run / "checkpoint.pt"), load_checkpoint(new / "checkpoint.pt")
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (1, 2)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # ... but never over another run's checkpoint
    other = shutil.copytree(run, tmp_path / "other")
    code, _, err = twocol(capsys, "train", "--resume", run / "checkpoint.pt", "--threads", "1", "--run-dir", other)
    one_line_error(code, err, f"{other} holds the checkpoint of another run")


@pytest.mark.parametrize("field,value,needle", [
    ("epoch", 10 ** 30, "epoch must be a whole number in 0..1,000,000"),
    ("step", 10 ** 13, "step must be a whole number in 0 (batch)..1,000,000,000,000"),
    ("classes", "cats", "classes must be a list of class names"),
    ("origin", {"data": 7}, "origin must hold data and gpus"),
])
def test_a_checkpoint_field_out_of_bounds_is_refused_by_name(run, capsys, field, value, needle):
    tamper(run / "checkpoint.pt", lambda c: c.update({field: value}))
    code, _, err = twocol(capsys, "train", "--resume", run / "checkpoint.pt", "--threads", "1", "train.epochs=2")
    one_line_error(code, err, str(run / "checkpoint.pt"), needle)


@pytest.fixture(scope="module")
def other_classes(data, tmp_path_factory):
    """The same images, with two class names swapped; and a set of 3 classes."""
    swapped = shutil.copytree(data, tmp_path_factory.mktemp("swapped") / "s")
    names = (data / CLASSES).read_text().splitlines()
    names[1], names[2] = names[2], names[1]
    (swapped / CLASSES).write_text("\n".join(names) + "\n")
    fewer = synthesize(tmp_path_factory.mktemp("fewer") / "s", classes=3, per_class=4, image_size=44,
                       val_per_class=2, workers=1)
    return names, swapped, fewer


def test_eval_features_and_resume_refuse_a_dataset_of_other_classes(trained, other_classes, tmp_path, capsys):
    names, swapped, fewer = other_classes
    ckpt = trained / "checkpoint.pt"
    first = f"class 1 is {names[2]!r} in the checkpoint, {names[1]!r} in the dataset (4 and 4 classes)"
    for command in (["eval", "--ckpt", ckpt, "--gpus", "cpu", "data.loader=torch", "data.workers=0"],
                    ["features", "--ckpt", ckpt, "--gpus", "cpu", "-o", tmp_path / "f"],
                    ["train", "--resume", ckpt, "--run-dir", tmp_path / "r", "train.epochs=2"]):
        code, _, err = twocol(capsys, *command, "--threads", "1", "--data", swapped)
        one_line_error(code, err, f"{ckpt} was trained on other classes than {swapped}: {first}")
    code, _, err = twocol(capsys, "eval", "--ckpt", ckpt, "--gpus", "cpu", "--threads", "1", "--data", fewer,
                          "data.loader=torch", "data.workers=0")
    one_line_error(code, err, "class 3 is", "in the checkpoint, missing in the dataset (4 and 3 classes)")


def test_a_checkpoint_without_class_names_is_evaluated_unchecked(run, other_classes, capsys):
    _, swapped, _ = other_classes
    tamper(run / "checkpoint.pt", lambda c: (c.pop("classes"), c.pop("origin")))
    code, out, err = twocol(capsys, "eval", "--ckpt", run / "checkpoint.pt", "--gpus", "cpu", "--threads", "1",
                            "--data", swapped, "data.loader=torch", "data.workers=0")
    assert code == 0 and "top-1 error" in out, err


def test_resume_into_a_directory_holding_another_runs_log_is_refused(run, tmp_path, capsys):
    new = tmp_path / "new"
    new.mkdir()
    stray = '{"kind": "epoch", "epoch": 7, "step": 70}\n'
    (new / "metrics.jsonl").write_text(stray)
    code, _, err = twocol(capsys, "train", "--resume", run / "checkpoint.pt", "--threads", "1", "--run-dir", new)
    one_line_error(code, err, f"{new} holds metrics.jsonl (of another run, without a checkpoint)", "another --run-dir")
    assert (new / "metrics.jsonl").read_text() == stray and sorted(p.name for p in new.iterdir()) == ["metrics.jsonl"]


def test_eval_alone_uses_the_runs_dataset(run, tmp_path, capsys, monkeypatch):
    cwd = tmp_path / "cwd"  # where the built-in synthetic set would be made
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    evaluate = ["eval", "--ckpt", run / "checkpoint.pt", "--gpus", "cpu", "--threads", "1", "data.loader=torch",
                "data.workers=0"]
    code, out, err = twocol(capsys, *evaluate)
    assert code == 0 and ", 8 val images: top-1 error" in out, err  # the run's set: 4 classes of 2
    assert list(cwd.iterdir()) == []
    tamper(run / "checkpoint.pt", lambda c: c["origin"].update(data=str(tmp_path / "gone")))
    code, _, err = twocol(capsys, *evaluate)
    one_line_error(code, err, f"{run / 'checkpoint.pt'} was trained on the dataset {tmp_path / 'gone'}, which is not "
                              "there any more", "--data")


@pytest.mark.parametrize("override,needle", [
    ("no_such.key=1", "override 'no_such.key=1': unknown key 'no_such'"),
    ("data.batch_size=-5", "override 'data.batch_size=-5': data.batch_size must be positive"),
    ("model.num_classes=999", "an override would change the net it holds, which is kept as trained: "
                              "model.num_classes: checkpoint 4, override 999"),
    # the tiny net's dropout 0 under the paper's convention: 0.5 would scale fc6 and fc7 by 0.5 at test
    ("model.dropout=0.5", "model.dropout: the checkpoint's net multiplies fc6 and fc7 by 1 at test"),
])
def test_eval_and_resume_check_every_override_and_refuse_one_that_changes_the_net(trained, tmp_path, capsys,
                                                                                  monkeypatch, override, needle):
    monkeypatch.chdir(tmp_path)  # (an eval that took no override would make its synthetic set here)
    ckpt = trained / "checkpoint.pt"
    for command in (["eval", "--ckpt", ckpt, "--gpus", "cpu"], ["train", "--resume", ckpt, "--run-dir", tmp_path / "r"]):
        code, _, err = twocol(capsys, *command, "--threads", "1", override)
        one_line_error(code, err, needle)
    assert not (tmp_path / "r").exists()


def test_eval_applies_the_overrides_that_keep_the_net(trained, tmp_path, capsys, monkeypatch):
    import twocol.evaluate as evaluate

    monkeypatch.chdir(tmp_path)  # (an eval that took no override would make its synthetic set here)
    real, asked = evaluate.make_loader, []
    monkeypatch.setattr(evaluate, "make_loader", lambda cfg, *a, **kw: asked.append(cfg) or real(cfg, *a, **kw))
    code, out, err = twocol(capsys, "eval", "--ckpt", trained / "checkpoint.pt", "--gpus", "cpu", "--threads", "1",
                            "data.batch_size=3", "data.loader=torch", "data.workers=0", "model.dropout_convention=inverted")
    assert code == 0 and ", 8 val images: top-1 error" in out, err
    (cfg,) = asked
    assert (cfg.data.batch_size, cfg.data.loader, cfg.data.workers, cfg.model.dropout_convention) == \
        (3, "torch", 0, "inverted")  # dropout 0: either convention is the same net at test
