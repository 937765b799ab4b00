"""The paper's comparisons as a protocol file says (bench/paper.py, protocol.py, comparisons.py,
training.py) and the report's section on them: protocols load and plan what they say, every
comparison's numbers by hand, the report's cells, and, at a toy scale, a whole run that reuses
what it finished and continues bit for bit after a signal."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench import comparisons, paper
from bench.protocol import DEFAULT, PROTOCOLS, load_protocol
from bench.report import write_report
from twocol.ablations import ABLATIONS, ablation_overrides
from twocol.config import load_config
from twocol.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
ENV = {"date": "2030-01-02", "commit": "abc1234", "torch": "2.13.0+cpu", "cpu": "Test CPU", "threads": 1,
       "gpu": None, "dali": "2.4.0"}


def rows_of(md: str, first_cell: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()
            if line.startswith(f"| {first_cell} |")]


TOY = """
name: toy
version: 1
about: A toy run of the harness.
scale: Whatever runs in seconds.
data:
  main: {synthetic: {classes: 4, per_class: 6, val_per_class: 3, image_size: 44}}
  small: {synthetic: {classes: 4, per_class: 4, val_per_class: 3, image_size: 44}}
nets:
  twocol: {config: configs/tiny_twocol.yaml}
  onecol: {config: configs/tiny_onecol.yaml}
common: [model.num_classes=4, data.batch_size=4, model.dropout=0.5, train.epochs=EPOCHS, data.workers=0]
seeds: 2
comparisons:
  two_vs_one: {half_width: {top1: 1.5, top5: 1.5}}
  ensemble: {size: 2}
  ablations: {names: [conv3_off, tanh]}
  dropout: {data: small}
"""


def toy(tmp_path: Path, epochs: int = 2, text: str = TOY) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(text.replace("EPOCHS", str(epochs)))
    return path


# --- protocols -----------------------------------------------------------------------------

def test_the_committed_protocols_load_and_plan_what_they_say():
    cpu = load_protocol(DEFAULT)
    assert cpu.name and cpu.version >= 1 and cpu.seeds >= 8 and cpu.threads == 1
    assert cpu.comparisons.two_vs_one.half_width.top1 <= 1.5 and cpu.comparisons.two_vs_one.half_width.top5 <= 1.5
    plan = paper.trainings(cpu, list(range(cpu.seeds)))
    assert list(plan) == ["two_vs_one", "ablations", "dropout"]  # the headline first
    assert [t.tag for t in plan["two_vs_one"][:2]] == ["twocol", "onecol"] and plan["two_vs_one"][0].keep_probs
    for tag in ("twocol", "onecol"):  # the scale model's nets have the paper's dropout
        cfg = load_config(cpu.nets[tag].config, [*cpu.common, *cpu.nets[tag].overrides])
        assert (cfg.model.dropout, cfg.model.dropout_convention) == (0.5, "paper")
        assert cfg.schedule.kind == "plateau" and cfg.schedule.end_on_plateau and cfg.schedule.max_drops == 3
    base = load_config(cpu.nets["twocol"].config, [*cpu.common, *cpu.nets["twocol"].overrides])
    for t in plan["ablations"]:  # what `twocol train --ablation NAME` applies
        assert t.overrides == (*cpu.common, *cpu.nets["twocol"].overrides, *ablation_overrides(base, [t.tag]))
    # The dropout comparison on the headline's data: with dropout is the headline's two-column net.
    assert cpu.comparisons.dropout.data == cpu.comparisons.two_vs_one.data
    assert {t.tag for t in plan["dropout"]} == {"dropout_off"} and plan["dropout"][0].overrides[-1] == "model.dropout=0"
    imagenet = load_protocol(PROTOCOLS / "imagenet.yaml")
    assert imagenet.data["main"].prepared == "DATA" and imagenet.nets["twocol"].config == "configs/alexnet_paper.yaml"
    assert paper.trainings(imagenet, [0, 1])["two_vs_one"][1].config == "configs/alexnet_onecol.yaml"


@pytest.mark.parametrize("change,message", [
    ("version: 1\n", "version must be >= 1"),
    ("  ablations: {names: [conv3_off, tanh]}\n", "comparisons.ablations names 'nope'"),
    ("  dropout: {data: small}\n", "comparisons.dropout.data names no data set ('tiny'"),
    ("seeds: 2\n", "comparisons.ensemble.size must be in 2..seeds"),
    ("common:", "unknown key 'commons'"),
])
def test_a_bad_protocol_is_one_line_naming_the_key(tmp_path, change, message):
    bad = {"version: 1\n": "version: 0\n",
           "  ablations: {names: [conv3_off, tanh]}\n": "  ablations: {names: [conv3_off, nope]}\n",
           "  dropout: {data: small}\n": "  dropout: {data: tiny}\n", "seeds: 2\n": "seeds: 1\n",
           "common:": "commons:"}[change]
    path = toy(tmp_path, text=TOY.replace(change, bad))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_protocol(path)
    if change == "common:":  # the command line: one line, exit 2
        r = subprocess.run([sys.executable, "-m", "bench.paper", "--protocol", str(path), "--plan"], cwd=ROOT,
                           capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"bench/paper.py: {path}: {message}"]


def test_plan_lists_every_training_once_and_runs_nothing(tmp_path, capsys):
    assert paper.main(["--protocol", str(toy(tmp_path)), "--plan", "--runs", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "two_vs_one: 4 trainings" in out and "ablations: 4 trainings" in out and "dropout: 4 trainings" in out
    assert "12 trainings" in out and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("jobs", ["0", "-1"])
def test_a_jobs_count_below_one_is_refused(tmp_path, jobs, capsys):
    with pytest.raises(SystemExit) as e:
        paper.main(["--protocol", str(toy(tmp_path)), "--plan", "--jobs", jobs])
    assert e.value.code == 2 and "--jobs must be at least 1" in capsys.readouterr().err


def test_ablations_on_other_data_get_a_baseline_of_their_own(tmp_path):
    # Run directories are named by tag and seed: the ablations' two-column baseline on the small
    # set must not share the headline's twocol-seedN.
    p = load_protocol(toy(tmp_path, text=TOY.replace("ablations: {names: [conv3_off, tanh]}",
                                                     "ablations: {names: [tanh], data: small}")))
    plan = paper.trainings(p, [0, 1])
    names = [t.name for ts in plan.values() for t in ts]
    assert len(names) == len(set(names))
    base = [t for t in plan["ablations"] if t.tag == "ablations_twocol"]
    assert [(t.data, t.seed) for t in base] == [("small", 0), ("small", 1)]


# --- the comparisons, by hand --------------------------------------------------------------

def run_of(tag, seed, top1, top5, *, epochs=3, ended="plateau", train=(80.0, 60.0, 40.0), val=(70.0, 55.0, 45.0),
           train_eval=30.0, centre=None, improving=False, params=None):
    return {"tag": tag, "seed": seed, "top1": top1, "top5": top5, "val_images": 100,
            "centre_top1": top1 + 1 if centre is None else centre, "centre_top5": top5 + 1,
            "train_eval_top1": train_eval, "train_eval_top5": 5.0, "epochs": epochs, "epoch_cap": 10,
            "cut_after": [1, 2][:epochs - 1], "ended": ended, "improving_at_end": improving,
            "train_top1_by_epoch": list(train), "val_top1_by_epoch": list(val), "val_top5_by_epoch": list(val),
            "lr_by_epoch": [0.01, 0.001, 0.0001][:epochs], "train_s": 10.0, "test_s": 1.0,
            "params": params or (1000 if tag == "onecol" else 900),
            "overrides": ["model.dropout=0.5"] + (ablation_overrides(load_config("configs/tiny_twocol.yaml",
                                                                                 ["model.dropout=0.5"]), [tag])
                                                   if tag in ABLATIONS else [])}


def handmade_runs():
    """Two seeds; every number chosen so the expected cells can be worked out by hand."""
    return {"twocol": [run_of("twocol", 0, 40.0, 10.0), run_of("twocol", 1, 42.0, 12.0)],
            "onecol": [run_of("onecol", 0, 43.0, 11.0), run_of("onecol", 1, 45.0, 13.0, ended="cap", improving=True)],
            "lrn_off": [run_of("lrn_off", 0, 41.0, 10.0), run_of("lrn_off", 1, 45.0, 12.0)],
            "tanh": [run_of("tanh", 0, 50.0, 20.0, epochs=4, train=(85.0, 80.0, 70.0, 45.0)),
                     run_of("tanh", 1, 52.0, 22.0, epochs=4, train=(85.0, 80.0, 75.0, 48.0))],
            "dropout_on": [run_of("dropout_on", 0, 40.0, 10.0, val=(80.0, 60.0, 50.0, 45.5, 45.0), epochs=5,
                                  centre=46.0, train_eval=40.0),
                           run_of("dropout_on", 1, 42.0, 12.0, val=(80.0, 60.0, 50.0, 48.0, 46.0), epochs=5,
                                  centre=47.0, train_eval=41.0)],
            "dropout_off": [run_of("dropout_off", 0, 44.0, 13.0, val=(70.0, 50.0, 49.5), centre=50.0, train_eval=30.0),
                            run_of("dropout_off", 1, 45.0, 13.0, val=(70.0, 52.0, 50.0), centre=51.0, train_eval=28.0)]}


def test_time_left_counts_what_a_resumed_training_cost_over_all_its_sittings():
    # Two finished trainings cost 600 s and 400 s in all; one of them was resumed and took only its
    # last 30 s in this sitting, which must not make the rest look short.
    done = [{"train_s": 590.0, "test_s": 10.0}, {"train_s": 395.0, "test_s": 5.0}]
    assert paper.time_left(done, left=4, jobs=2) == 1000.0


def test_two_vs_one_and_convergence_by_hand():
    runs = handmade_runs()
    hw = load_protocol(DEFAULT).comparisons.two_vs_one.half_width
    c = comparisons.two_vs_one(runs["twocol"], runs["onecol"], hw)
    # Two seeds: t(1 df) = 12.71, sd of (40, 42) = sqrt(2), half-width 12.71. Paired differences 3, 3: sd 0.
    assert c["top1"]["twocol"] == pytest.approx([41.0, 12.71]) and c["top1"]["onecol_minus_twocol"] == [3.0, 0.0]
    assert c["top1"]["resolved"] and c["top1"]["target_met"] and c["top1"]["paper_onecol_minus_twocol"] == 1.7
    assert c["top5"]["onecol_minus_twocol"] == [1.0, 0.0] and c["top5"]["paper_onecol_minus_twocol"] == 1.23
    assert c["ten_patch_minus_centre"]["top1"] == [-1.0, 0.0]
    one = c["convergence"]["onecol"]
    assert one["ended"] == ["plateau", "cap"] and one["capped_while_improving"] == [1]
    assert one["cut_after"] == [[1, 2], [1, 2]] and one["train_eval_top1"] == [30.0, 0.0]


def test_the_ensemble_averages_softmax_over_every_choice_of_seeds():
    labels = np.array([0, 1, 2])
    # Three nets on three images of 6 classes. Net 0 is right on image 0 only, net 1 on images 0
    # and 1, net 2 on image 2 only; their average is right where two of them agree.
    def probs(right):
        p = np.full((3, 6), 0.1)
        for i in range(3):
            p[i, labels[i] if i in right else (labels[i] + 3) % 6] = 0.5
        return p
    preds = {0: (probs({0}), labels), 1: (probs({0, 1}), labels), 2: (probs({2}), labels)}
    twocol = [run_of("twocol", s, top1, 0.0) for s, top1 in ((0, 200 / 3), (1, 100 / 3), (2, 200 / 3))]
    e = comparisons.ensemble(twocol, preds, 2)
    assert e["choices"] == 3 and e["seeds"] == [0, 1, 2]
    # Pairs (0,1): images 0 right, 1 ties 0.3/0.3 (argsort keeps the first: class 1, right), 2 wrong -> 1/3;
    # (0,2): image 0 right, 1 wrong, 2 tie (class 2 first) -> right: 1/3; (1,2): 0 tie -> right, 1 tie -> right,
    # 2 tie -> right: 0.
    assert e["top1"]["ensemble"] == pytest.approx([200 / 9, 0.0, 100 / 3])
    assert e["top1"]["single"][0] == pytest.approx(500 / 9)


def test_the_dropout_comparison_measures_overfitting_in_eval_mode_and_epochs_to_converge():
    runs = handmade_runs()
    d = comparisons.dropout(runs["dropout_on"], runs["dropout_off"], 1.0, load_protocol(DEFAULT).comparisons.dropout.half_width)
    # gap = centre (last epoch's validation) - training split in eval mode: with 6, 6; without 20, 23.
    assert d["gap"]["with"] == [6.0, 0.0] and d["gap"]["without"][0] == 21.5
    assert d["gap"]["without_minus_with"][0] == 15.5
    # Within 1 point of the final validation error: with dropout epochs 4 (45.5 <= 46) and 4 (48 > 47: 5);
    # without: 2 (50 > 50.5? no: 49.5 + 1 = 50.5 >= 50) and 3 (52 > 51).
    assert d["epochs_to_converge"]["with"] == [4, 5] and d["epochs_to_converge"]["without"] == [2, 3]
    assert d["epochs_to_converge"]["without_over_with"] == pytest.approx(2.5 / 4.5)
    assert d["top1_without_minus_with"] == [3.5, pytest.approx(12.71 * 0.5 * 2 ** 0.5 / 2 ** 0.5)]


# --- the report ----------------------------------------------------------------------------

def handmade_record():
    runs = handmade_runs()
    p = load_protocol(DEFAULT)
    abl = {name: {**comparisons.ablation(runs["twocol"], runs[name], ABLATIONS[name], runs[name][0]["overrides"],
                                          p.comparisons.ablations.half_width, 10), "baseline": "twocol"}
           for name in ("lrn_off", "tanh")}
    preds = {s: (np.eye(10)[[s % 10, 1, 2]], np.array([0, 1, 2])) for s in (0, 1)}
    comps = {"two_vs_one": comparisons.two_vs_one(runs["twocol"], runs["onecol"], p.comparisons.two_vs_one.half_width),
             "ensemble": comparisons.ensemble(runs["twocol"], preds, 2), "ablations": abl,
             "dropout": comparisons.dropout(runs["dropout_on"], runs["dropout_off"], 1.0, p.comparisons.dropout.half_width)}
    return {"bench": "paper", "environment": ENV, "not_reached": [], "rows": [],
            "protocol": {"file": "bench/protocols/x.yaml", "name": "x", "version": 2, "seeds": 2, "quick_look": False,
                         "protocol_sha256": "a" * 64, "configs_sha256": {"configs/tiny_twocol.yaml": "b" * 64}},
            "about": "What this is.", "scale": "The rule.", "common": ["model.dropout=0.5"],
            "nets": {"twocol": load_config("configs/tiny_twocol.yaml", ["model.dropout=0.5"]).to_dict(),
                     "onecol": load_config("configs/tiny_onecol.yaml").to_dict()},
            "dropout_data": "small", "placement": "cpu (two simulated devices)", "jobs": 2, "threads": 1,
            "data": {k: {"path": f"data/{k}", "classes": 10, "train": n, "val": 100, "image_size": 44,
                         "params": {"kind": "synthetic"}} for k, n in (("main", 3000), ("small", 500))},
            "sittings": [{"started": "2030-01-02T10:00:00", "commit": "abc1234", "wall_s": 600.0, "trainings": 12,
                          "reused": 0, "load_average": [0.5, 2.0]},
                         {"started": "2030-01-03T10:00:00", "commit": "def5678", "wall_s": 60.0, "trainings": 0,
                          "reused": 12, "load_average": [0.1, 0.2]}],
            "trainings": {"total": 12, "done": 12}, "runs": runs, "comparisons": comps, "wall_s": 660.0}


def test_the_report_shows_the_headline_convergence_ensemble_ablations_and_dropout(tmp_path):
    (tmp_path / "2030-01-02-paper-x-v2.json").write_text(json.dumps(handmade_record()))
    older = handmade_record()
    older["protocol"]["version"] = 1
    older["comparisons"]["two_vs_one"]["top1"]["twocol"] = [99.0, 1.0]
    (tmp_path / "2030-01-01-paper-x-v1.json").write_text(json.dumps(older))  # an earlier version: not shown
    quick = handmade_record()
    quick["protocol"].update(seeds=1, quick_look=True)
    (tmp_path / "2030-01-04-paper-x-v2-seeds1.json").write_text(json.dumps(quick))  # the full run wins
    md = write_report(tmp_path)[0].read_text()
    assert "protocol `x` version 2 (2030-01-02-paper-x-v2.json)" in md and "99.00" not in md
    (top1,) = rows_of(md, "top-1")[:1]
    assert top1 == ["top-1", "41.00 ± 12.71", "44.00 ± 12.71", "+3.00 ± 0.00", "37.47 / 39.17", "+1.70",
                    "resolved: the one-column net errs more (the paper's direction)", "0.00 <= 1.5: met", "2 / 2"]
    (one,) = rows_of(md, "one-column")
    assert one[1:3] == ["3-3 (mean 3.0)", "1 / 2"] and one[-1] == "**1 hit the cap still improving** (seeds 1)"
    lrn = rows_of(md, "LRN off")[0]  # the ablations table; the second is its convergence row
    assert lrn[1] == "+2.00 ± 12.71" and lrn[4] == "not resolved (the interval spans 0)" and lrn[6] == "2 / 2"
    assert "- `--ablation lrn_off`: `model.lrn.enabled=false`: no response normalisation" in md
    # Threshold: halfway between chance (90) and the ReLU nets' final 40: 65, reached in epoch 2 by ReLU, 4 by tanh.
    assert "ReLU 2, 2; tanh 4, 4; tanh / ReLU **2.00x** (paper: 6x" in md
    assert "average of 2" in md and "Epochs to converge" in md and "without / with **0.56x**" in md
    assert "`model.dropout` 0.0 -> 0.5" not in md  # the paper's dropout is not a difference
    assert "`model.input_size` 224 -> 40" in md and "`init.scheme` 'paper' -> 'kaiming'" in md
    assert "2 sitting(s); sitting 1: 2030-01-02T10:00:00, commit abc1234, 10 min" in md
    assert "commit def5678" in md and "What this is." in md and "**How the scale was chosen.** The rule." in md
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_committed_results_files_all_still_read(tmp_path):
    """Every results file under bench/results, whatever its age, reads through the one record
    format, and the report renders them: the paper's from before protocol files too."""
    import shutil

    from bench.record import read
    from bench.report import markdown
    from bench.report.find import files, latest
    results = ROOT / "bench" / "results"
    for _, key, path in files(results):
        r = read(path)
        assert "environment" in r and "not_reached" in r, path
    md = markdown(latest(results))
    assert "## The paper's" in md
    old = tmp_path / "old"
    old.mkdir()
    for name in ("2026-12-02-paper.json", "2026-11-28-kernels-cpu.json", "2026-11-28-data-cpu.json"):
        shutil.copy(results / name, old / name)
    md = write_report(old)[0].read_text()
    assert "## The paper's comparisons, before protocol files (2026-12-02-paper.json)" in md
    assert rows_of(md, "top-1") and "## Data loaders" in md


# --- end to end at a toy scale -------------------------------------------------------------

def bench(tmp_path, protocol, *extra, **kw):
    return subprocess.run([sys.executable, "-m", "bench.paper", "--protocol", str(protocol), "--runs",
                           str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data"), "--out-dir",
                           str(tmp_path / "results"), "--jobs", "2", *extra], cwd=ROOT, capture_output=True,
                          text=True, **kw)


@pytest.mark.slow
def test_a_toy_protocol_end_to_end_then_reused_and_a_changed_one_refused(tmp_path):
    protocol = toy(tmp_path)
    r = bench(tmp_path, protocol)
    assert r.returncode == 0, r.stderr[-3000:]
    (out,) = (tmp_path / "results").glob("*-paper-toy-v1.json")
    res = json.loads(out.read_text())
    assert res["not_reached"] == [] and set(res["comparisons"]) == {"two_vs_one", "ensemble", "ablations", "dropout"}
    assert res["trainings"] == {"total": 12, "done": 12} and len(res["sittings"]) == 1
    assert set(res["runs"]) == {"twocol", "onecol", "conv3_off", "tanh", "dropout_on", "dropout_off"}
    assert res["runs"]["dropout_off"][0]["overrides"][-1] == "model.dropout=0"
    assert res["protocol"]["protocol_sha256"] and res["protocol"]["configs_sha256"]
    assert "12/12 trainings done" in r.stdout and (tmp_path / "results" / "latest.md").is_file()
    # The same command again: nothing retrained, the same numbers.
    again = bench(tmp_path, protocol)
    assert again.returncode == 0 and "12 finished in an earlier sitting" in again.stdout
    res2 = json.loads(out.read_text())
    assert res2["runs"] == res["runs"] and len(res2["sittings"]) == 2 and res2["sittings"][1]["trainings"] == 0
    # A protocol edited after its results were made is refused until it is a new version.
    protocol.write_text(protocol.read_text().replace("seeds: 2", "seeds: 2  # edited"))
    refused = bench(tmp_path, protocol)
    assert refused.returncode == 2 and "raise its `version`" in refused.stderr


@pytest.mark.slow
def test_an_interrupted_bench_continues_bit_for_bit(tmp_path):
    """SIGINT while trainings run: each stops with a checkpoint, the bench exits 130 with one line;
    the same command finishes, and every result equals an uninterrupted run's."""
    text = TOY.replace("  ablations: {names: [conv3_off, tanh]}\n", "").replace("  dropout: {data: small}\n", "")
    protocol = toy(tmp_path, epochs=20, text=text)
    whole = tmp_path / "whole"
    whole.mkdir()
    assert bench(whole, protocol).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "bench.paper", "--protocol", str(protocol), "--runs",
                             str(tmp_path / "runs"), "--data-dir", str(whole / "data"), "--out-dir",
                             str(tmp_path / "results"), "--jobs", "2"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    def training() -> bool:  # a training past its first epoch and not finished
        return any('"kind": "epoch"' in m.read_text() and not (m.parent / "result.json").exists()
                   for m in (tmp_path / "runs").glob("*/metrics.jsonl"))

    deadline = time.time() + 120
    while time.time() < deadline and not training():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("bench: stopped by SIGINT") and "Traceback" not in err
    left = list((tmp_path / "runs").glob("*/checkpoint.pt"))
    assert left and not all((c.parent / "result.json").exists() for c in left)
    r = bench(tmp_path, protocol, env={**os.environ})
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(next((tmp_path / "results").glob("*-paper-toy-v1.json")).read_text())
    ref = json.loads(next((whole / "results").glob("*-paper-toy-v1.json")).read_text())
    strip = lambda runs: {t: [{k: v for k, v in x.items() if not k.endswith("_s")} for x in rs] for t, rs in runs.items()}
    assert strip(res["runs"]) == strip(ref["runs"]) and len(res["sittings"]) == 2
