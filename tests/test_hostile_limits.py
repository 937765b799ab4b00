"""The last hostile cases of the input: thread and worker counts above what the machine has,
a prepare destination inside its source (or the reverse), the YAML words that read as
booleans, and the messages that must name the path, the override and a real rate."""
import dataclasses
import io
import itertools
import json
import os
import re
import subprocess
import sys
import time
import typing

import pytest
import torch

from twocol import threads
from twocol.config import Config, load_config
from twocol.data.loader import make_loader
from twocol.devices import Placement
from twocol.data.synth import synthesize
from twocol.errors import ConfigError
from twocol.train import train

from conftest import LOADER_BACKENDS, config, loader_config, one_line_error, twocol_in_process as twocol
from test_hostile_data import tree
from test_hostile_runs import files_at_most

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
CPUS = threads.available_cpus()[0]


@pytest.fixture
def notes():
    """Each test sees the notes it causes (they are said once per process otherwise), and the
    process keeps its torch thread count."""
    threads.note.cache_clear()
    before = torch.get_num_threads()
    yield
    threads.note.cache_clear()
    torch.set_num_threads(before)


def lowered(what):
    return f"twocol: {what} is more than the {CPUS} CPU(s) this process may use"


def test_thread_counts_above_the_cpus_are_lowered_with_one_line(notes, monkeypatch, tmp_path, capsys):
    code, _, err = twocol(capsys, "eval", "--ckpt", tmp_path / "none.pt", "--gpus", "cpu", "--threads", "100000")
    assert code == 2 and err.splitlines()[0].startswith(lowered("--threads 100000")), err
    assert torch.get_num_threads() == CPUS
    monkeypatch.setenv("OMP_NUM_THREADS", "100000")
    assert threads.choose_threads() == (CPUS, "OMP_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "9" * 5000)  # past int()'s 4,300 digits: lowered, not a traceback
    assert threads.choose_threads() == (CPUS, "OMP_NUM_THREADS")
    for bad in ("0", "000", "-1", "1e3"):
        monkeypatch.setenv("OMP_NUM_THREADS", bad)
        with pytest.raises(ConfigError, match="OMP_NUM_THREADS"):
            threads.choose_threads()
    assert threads.choose_threads(CPUS) == (CPUS, "--threads")  # at the bound: kept, nothing said
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 2 and said[0].startswith(lowered("OMP_NUM_THREADS=100000")), said
    assert said[1].startswith(lowered("OMP_NUM_THREADS=99999999999999999...")), said


@pytest.mark.parametrize("value", ["abc", *(pytest.param(v, marks=pytest.mark.slow) for v in ("0", "-3", "1.5"))])
def test_a_bad_omp_num_threads_is_one_line_before_openmp_complains_of_it(tmp_path, value):
    # A real process: OpenMP reads the variable once, as torch loads.
    r = subprocess.run([sys.executable, "-m", "twocol", "eval", "--ckpt", str(tmp_path / "none.pt")], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": value}, timeout=120)
    assert (r.returncode, r.stderr) == (2, f"twocol: error: OMP_NUM_THREADS={value!r} is not a whole number >= 1\n")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["--threads", "OMP_NUM_THREADS"])
def test_an_absurd_thread_count_is_lowered_instead_of_crashing(tmp_path, how):
    """A real process (torch crashed with a segmentation fault, exit 139, when asked for
    100,000 threads), training a few steps so that the threads are used."""
    data = tmp_path / "set"
    subprocess.run([sys.executable, "-m", "twocol", "synth", data, "--classes", "2", "--per-class", "4",
                    "--size", "44", "--workers", "1"], env={**os.environ, "PYTHONPATH": SRC}, check=True,
                   capture_output=True)
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "100000" if how == "OMP_NUM_THREADS" else "1"}
    extra = ["--threads", "100000"] if how == "--threads" else []
    r = subprocess.run([sys.executable, "-m", "twocol", "train", "-c", "configs/tiny_twocol.yaml", "--gpus", "cpu",
                        "--data", data, "--run-dir", tmp_path / "run", "model.num_classes=2", "train.epochs=1",
                        "data.batch_size=4", "data.loader=torch", "data.workers=0", *extra],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{how}{' ' if how == '--threads' else '='}100000 is more than the {CPUS} CPU(s)" in r.stderr
    assert f"{CPUS} compute thread(s)" in r.stdout + r.stderr


@pytest.mark.parametrize("backend", LOADER_BACKENDS)
def test_data_workers_above_the_cpus_are_lowered_for_the_loader_only(notes, loader_root, capsys, backend):
    cfg = loader_config("data.workers=100000", f"data.loader={backend}")
    loaders = [make_loader(cfg, loader_root, split, Placement.cpu(), train=split == "train")
               for split in ("train", "val")]
    assert [l.cfg.data.workers for l in loaders] == [CPUS, CPUS]
    assert cfg.data.workers == 100000  # the run's config, and so its checkpoint, keeps what was asked
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(lowered("data.workers=100000")), err


@pytest.mark.parametrize("command", ["prepare", "synth"])
def test_worker_counts_of_prepare_and_synth_are_bounded(notes, tmp_path, capsys, command):
    src = tree(tmp_path / "src", ["a", "b"])
    args = [src, tmp_path / "p", "--size", "8"] if command == "prepare" else \
        [tmp_path / "p", "--classes", "2", "--per-class", "2", "--size", "8"]
    for bad in ("-1", "0"):
        one_line_error(*twocol(capsys, command, *args, "--workers", bad)[::2], f"--workers must be at least 1, got {bad}")
    assert not (tmp_path / "p").exists()  # refused before any work
    code, _, err = twocol(capsys, command, *args, "--workers", "100000")
    assert code == 0 and err.startswith(lowered("--workers 100000")), err


def test_prepare_refuses_a_destination_inside_its_source_and_the_reverse(tmp_path, capsys):
    src = tree(tmp_path / "src", ["a", "b"])
    before = sorted(p.relative_to(src) for p in src.rglob("*"))
    (tmp_path / "link").symlink_to(src)
    elsewhere = tree(tmp_path / "disk2" / "set", ["a", "b"])  # SRC/train a link to another disk
    (tmp_path / "src2").mkdir()
    (tmp_path / "src2" / "train").symlink_to(elsewhere / "train")
    (tmp_path / "src2" / "val").symlink_to(elsewhere / "val")
    for s, d, needle in [
        (src, src / "train" / "out", f"destination {src}/train/out is inside the source {src}"),
        (src, src, f"destination {src} is the source {src}"),
        (src, tmp_path / "link" / "out", f"destination {tmp_path}/link/out is inside the source {src}"),
        (tmp_path / "link", src / "val" / "new", f"destination {src}/val/new is inside the source {tmp_path}/link"),
        (src, tmp_path, f"source {src} is inside the destination {tmp_path}"),
        (tmp_path / "src2", elsewhere / "train" / "out", f"destination {elsewhere}/train/out is inside the source "
                                                         f"{tmp_path}/src2 (its train/ folder, {elsewhere}/train)"),
    ]:
        one_line_error(*twocol(capsys, "prepare", s, d, "--size", "8", "--workers", "1")[::2], needle)
    assert sorted(p.relative_to(src) for p in src.rglob("*")) == before


def yaml_boolean_keys() -> dict[str, str]:
    """Every string-choice key of the config whose choices hold a word YAML 1.1 reads unquoted as
    a boolean (off, on, yes, no, true, false): key -> that word."""
    found = {}

    def walk(cls, prefix):
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
            elif typing.get_origin(tp) is typing.Literal:
                for word in typing.get_args(tp):
                    if word in ("off", "on", "yes", "no", "true", "false"):
                        found[prefix + f.name] = word

    walk(Config, "")
    return found


def test_the_config_keys_with_boolean_words_are_known():
    assert yaml_boolean_keys() == {"train.amp": "off", "data.verify_files": "off"}


@pytest.mark.parametrize("key,word", sorted(yaml_boolean_keys().items()))
def test_a_documented_word_that_yaml_reads_as_a_boolean_works_unquoted(tmp_path, key, word):
    section, name = key.split(".")
    other = [w for w in typing.get_args(typing.get_type_hints(type(getattr(Config(), section)))[name]) if w != word][0]
    file = tmp_path / "c.yaml"
    file.write_text(f"base: {os.path.abspath('configs/tiny_twocol.yaml')}\n{section}:\n  {name}: {word}\n")
    assert getattr(getattr(load_config(file), section), name) == word
    assert getattr(getattr(load_config("configs/tiny_twocol.yaml", [f"{key}={other}", f"{key}={word}"]),
                           section), name) == word
    assert getattr(getattr(load_config("configs/tiny_twocol.yaml", [f"{key}={word.upper()}"]), section), name) == word
    opposite = {"off": "on", "on": "off", "yes": "no", "no": "yes"}[word]
    with pytest.raises(ConfigError, match=f"override '{key}={opposite}': {key} must be .*YAML reads"):
        load_config("configs/tiny_twocol.yaml", [f"{key}={opposite}"])


def test_a_bad_override_is_blamed_on_the_override_not_the_file(tmp_path, capsys):
    code, _, err = twocol(capsys, "describe", "-c", "configs/tiny_twocol.yaml", "data.batch_size=8",
                          "data.workers=-1", "train.epochs=3")
    one_line_error(code, err, "override 'data.workers=-1': data.workers must be >= 0")
    assert "tiny_twocol.yaml" not in err
    file = tmp_path / "bad.yaml"
    file.write_text(f"base: {os.path.abspath('configs/tiny_twocol.yaml')}\ndata: {{workers: -1}}\n")
    one_line_error(*twocol(capsys, "describe", "-c", file, "train.epochs=3")[::2], f"{file}: data.workers must be >= 0")
    assert load_config(file, ["data.workers=1"]).data.workers == 1  # an override may repair the file


@pytest.mark.parametrize("override,needle", [
    ("data.prefetch=100000000", "data.prefetch must be in 1..64"),
    ("train.seed=-1", "train.seed must be in 0..2147483647"),       # numpy's seeding raised a traceback
    ("train.seed=4294967296", "train.seed must be in 0..2147483647"),
])
def test_absurd_key_values_are_refused(capsys, override, needle):
    one_line_error(*twocol(capsys, "describe", "-c", "configs/tiny_twocol.yaml", override)[::2],
                   f"override '{override}': {needle}")


@pytest.mark.parametrize("option", ["--per-class", "--val-per-class"])
def test_synth_refuses_an_absurd_number_of_images(tmp_path, capsys, option):
    args = {"--per-class": ["--per-class", "10000000000000"], "--val-per-class": ["--per-class", "2",
                                                                                 "--val-per-class", "10000000000000"]}
    one_line_error(*twocol(capsys, "synth", tmp_path / "s", "--classes", "2", *args[option])[::2], "1..100000")
    assert not (tmp_path / "s").exists()


def test_a_full_disk_during_prepare_names_the_file(tmp_path, capsys):
    src = tree(tmp_path / "src", ["a", "b"])
    dst = tmp_path / "dst"
    with files_at_most(600):  # the lock and params.json fit; a stored 64-pixel JPEG does not
        code, _, err = twocol(capsys, "prepare", src, dst, "--size", "64", "--workers", "1")
    assert code == 2 and "Traceback" not in err, err  # after the progress line, the error names the file
    assert err.splitlines()[-1] == f"twocol: error: {dst}/train/a/img0.jpg: File too large", err
    code, _, err = twocol(capsys, "prepare", src, dst, "--size", "64", "--workers", "1")
    assert code == 0, err  # and the same command then finishes the set


def test_a_resumed_prepare_shows_the_rate_of_this_run_only(tmp_path, capsys, monkeypatch):
    from twocol.data import build

    src = tree(tmp_path / "src", ["a", "b"], per_class=20)  # chunks of 16, 16 and 8 images per split
    run_chunk, calls = build.run_chunk, []

    def killed_after_one_chunk(chunk):
        calls.append(len(chunk.items))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return run_chunk(chunk)

    monkeypatch.setattr(build, "run_chunk", killed_after_one_chunk)
    assert twocol(capsys, "prepare", src, tmp_path / "dst", "--size", "8", "--workers", "1")[0] == 130
    monkeypatch.setattr(build, "run_chunk", run_chunk)
    clock = itertools.count()  # one second per reading of the clock, in this process
    monkeypatch.setattr("twocol.monitor.time.perf_counter", lambda: float(next(clock)))
    code, _, err = twocol(capsys, "prepare", src, tmp_path / "dst", "--size", "8", "--workers", "1")
    assert code == 0, err
    done, total, rate, elapsed = map(int, re.search(r"prepare: (\d+)/(\d+) \(100%\) (\d+)/s (\d+) s\n", err).groups())
    assert done == total == 80 and calls[0] == 16
    assert rate == round((total - calls[0]) / elapsed), err  # not total / elapsed


@pytest.mark.slow
def test_progress_and_step_rows_give_time_left_and_data_wait(tmp_path, monkeypatch):
    from twocol.data.torch_loader import TorchLoader

    epoch = TorchLoader.epoch

    def slow(self, *a, **kw):  # a loader that makes every step after the first wait 0.15 s for its batch
        for batch in epoch(self, *a, **kw):
            yield batch
            time.sleep(0.15)

    monkeypatch.setattr(TorchLoader, "epoch", slow)
    data = synthesize(tmp_path / "set", classes=2, per_class=12, image_size=44, val_per_class=2, workers=1)
    cfg = config("tiny_twocol", "data.batch_size=8", "train.epochs=2", "train.log_every=1", "data.loader=torch",
                 "data.workers=0", "model.num_classes=2", "model.fc_widths=[32, 32]")
    shown = io.StringIO()
    train(cfg, Placement.cpu(), data, tmp_path / "run", stream=shown)
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["kind"] == "step"]
    assert [(r["epoch"], r["batch"]) for r in steps] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    for r in steps:
        assert 0 <= r["data_wait"] <= 1 and r["eta_epoch_s"] >= 0 and r["eta_run_s"] >= r["eta_epoch_s"], r
    # at the epoch's pace p: after batch 1 of 3, epoch 1 has 2p left and the run 2p + 3p
    first = steps[0]
    assert first["eta_epoch_s"] > 0 and first["eta_run_s"] == pytest.approx(2.5 * first["eta_epoch_s"])
    assert steps[2]["eta_epoch_s"] == 0 and steps[2]["eta_run_s"] > 0 and steps[-1]["eta_run_s"] == 0
    # data_wait is the share of the window's wall time (images / images_per_s) spent in next(),
    # which slept 0.15 s before every batch after an epoch's first
    for r in steps[1:]:
        waited = r["data_wait"] * 8 / r["images_per_s"]
        assert (waited >= 0.15) == (r["batch"] > 1), (r["batch"], waited)
    assert len(re.findall(r"data wait \d+%; left: epoch \d+ s, run \d+ s", shown.getvalue())) == 6, shown.getvalue()
