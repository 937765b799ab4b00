"""The bench harness: bench/report.py on handmade results, bench/paper.py end to end at a toy
scale, the throughput variants and levers, and the end-to-end bench's harness."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from twocol.ablations import ABLATIONS, ablation_overrides
from twocol.config import load_config
from twocol.data.synth import synthesize
from twocol.devices import Placement
from twocol.model import build_model

from bench import paper
from bench import report as bench_report

ROOT = Path(__file__).resolve().parents[1]

ENV = {"date": "2030-01-02", "commit": "abc1234", "torch": "2.13.0+cpu", "cpu": "Test CPU", "threads": 1,
       "gpu": None, "dali": "2.4.0"}


def run_of(tag, seed, top1, top5, by_epoch=(80.0, 60.0, 40.0)):
    return {"tag": tag, "seed": seed, "seconds": 1.0, "params": 1000 if tag == "onecol" else 900,
            "top1": top1, "top5": top5, "val_images": 100, "centre_top1": top1 + 1, "centre_top5": top5,
            "train_top1_by_epoch": list(by_epoch)}


def handmade_paper():
    """Two seeds; every number chosen so the expected table cells can be worked out by hand."""
    runs = {"twocol": [run_of("twocol", 0, 40.0, 10.0), run_of("twocol", 1, 42.0, 12.0)],
            "onecol": [run_of("onecol", 0, 43.0, 11.0), run_of("onecol", 1, 45.0, 13.0)],
            "lrn_off": [run_of("lrn_off", 0, 41.0, 10.0), run_of("lrn_off", 1, 45.0, 12.0)],
            "lighting_off": [run_of("lighting_off", 0, 38.0, 10.0), run_of("lighting_off", 1, 40.0, 12.0)],
            "tanh": [run_of("tanh", 0, 50.0, 20.0, (85.0, 80.0, 70.0, 45.0)),
                     run_of("tanh", 1, 52.0, 22.0, (85.0, 80.0, 75.0, 48.0))]}
    comparison = {k: {"twocol": paper.mean_ci([r[k] for r in runs["twocol"]]),
                      "onecol": paper.mean_ci([r[k] for r in runs["onecol"]]),
                      "onecol_minus_twocol": paper.paired(runs["twocol"], runs["onecol"], k),
                      "paper_onecol_minus_twocol": {"top1": 1.7, "top5": 1.23}[k]} for k in ("top1", "top5")}
    ablations = {name: {"overrides": ablation_overrides(load_config("configs/tiny_twocol.yaml"), [name]),
                        "claim": ABLATIONS[name].claim, "paper_minus_baseline": ABLATIONS[name].paper_effect,
                        "top1_minus_baseline": paper.paired(runs["twocol"], runs[name], "top1"),
                        "top5_minus_baseline": paper.paired(runs["twocol"], runs[name], "top5")}
                 for name in ("lrn_off", "lighting_off", "tanh")}
    ablations["tanh"]["epochs_to_threshold"] = paper.speed(runs["twocol"], runs["tanh"], ABLATIONS["tanh"].speed, 50.0, 10)
    return {"benchmark": "paper", "preset": "cpu", "configs": {"twocol": "configs/small_twocol.yaml",
                                                               "onecol": "configs/small_onecol.yaml"},
            "overrides": {"twocol": ["model.fc_widths=[64,64]"], "onecol": ["model.fc_widths=[128,128]"]},
            "data": {"path": "data/x", "classes": 10, "train": 3000, "val": 1000, "image_size": 44,
                     "params": {"kind": "synthetic"}},
            "input_size": 40, "num_classes": 10, "epochs": 3, "seeds": [0, 1], "placement": "cpu (two simulated devices)",
            "schedule": {"kind": "fixed", "factor": 0.1, "milestones": [2, 5], "max_drops": 3}, "dropout": 0.0,
            "threads": 1, "jobs": 2, "wall_s": 120.0, "run_s": 230.0, "run_cpu_s": 180.0, "targets": paper.TARGETS,
            "load_average": [3.0, 4.0], "environment": ENV, "paper": paper.PAPER,
            "runs": runs, "comparison": comparison, "ablations": ablations}


def handmade_others():
    throughput = {"benchmark": "throughput", "config": "small_twocol", "placement": "cpu (two simulated devices)",
                  "batch": 128, "environment": ENV,
                  "results": [{"variant": "twocol", "amp": "off", "median_step_s": 0.24, "images_per_s": 128 / 0.24,
                               "steps": 10, "link_bytes_per_step": {"conv3": {"forward": 2 ** 20, "backward": 2 ** 20}}},
                              {"variant": "onecol", "amp": "off", "median_step_s": 0.1, "images_per_s": 1280.0, "steps": 10},
                              {"variant": "grouped", "amp": "off", "median_step_s": 0.2, "images_per_s": 640.0, "steps": 10}],
                  "summary": {"off": {"twocol_over_grouped": 1.2, "target_twocol_over_grouped": 1.10}}}
    kernels = {"environment": ENV, "device": "cpu", "repeats": 5,
               "results": [{"layer": "conv1", "dtype": "float32", "shape": [128, 96, 55, 55],
                            "speedup": {"forward": 4.0, "backward": 12.5, "forward_backward": 8.1},
                            "kernel_forward_fraction_of_copy": 0.52, "kernel_backward_fraction_of_copy": 0.61}],
               "targets_met": {"forward_backward_speedup_at_least_10x": False}}
    data = {"bench": "data", "env": ENV, "device": "cpu", "batch": 128, "workers": 2, "repeats": 3, "what": "one epoch",
            "results": [{"stored": 72, "crop": 64, "median": {"dali": 6000.0, "torch": 3000.0}, "dali_over_torch": 2.0},
                        {"stored": 256, "crop": 224, "median": {"dali": 600.0, "torch": 480.0}, "dali_over_torch": 1.25}]}
    return {"throughput-cpu": throughput, "kernels-cpu": kernels, "data-cpu": data}


def rows_of(md: str, first_cell: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()
            if line.startswith(f"| {first_cell} |")]


def report(results: Path) -> str:
    """bench/report.py in this process (its command line is run by test_report_without_results_says_so)."""
    assert bench_report.main(["--results", str(results)]) == 0
    return (results / "latest.md").read_text()


def test_report_tables_from_handmade_results(tmp_path):
    old = handmade_paper()
    old["comparison"]["top1"]["twocol"] = [99.0, 1.0]
    (tmp_path / "2029-12-31-paper.json").write_text(json.dumps(old))  # an older run: must be ignored
    (tmp_path / "2030-01-02-paper.json").write_text(json.dumps(handmade_paper()))
    for name, v in handmade_others().items():
        (tmp_path / f"2030-01-02-{name}.json").write_text(json.dumps(v))
    md = report(tmp_path)

    # Two seeds: t(1 df) = 12.71, sd of (40, 42) = sqrt(2), half-width 12.71 * sqrt(2) / sqrt(2) = 12.71.
    # Paired differences 3, 3: mean 3, sd 0, so a zero-width interval that excludes 0.
    (top1,) = rows_of(md, "top-1")
    assert top1[:7] == ["top-1", "41.00 ± 12.71", "44.00 ± 12.71", "+3.00 ± 0.00", "37.47", "39.17", "+1.70"]
    assert top1[7:] == ["resolved: the one-column net errs more (the paper's direction)", "0.00 <= 2.0: met", "2 / 2"]
    (top5,) = rows_of(md, "top-5")
    assert top5[1:4] == ["11.00 ± 12.71", "12.00 ± 12.71", "+1.00 ± 0.00"] and top5[8] == "-"
    assert "99.00" not in md
    # LRN off: differences 1 and 3, mean 2, sd sqrt(2), half-width 12.71: the interval spans 0.
    (lrn,) = rows_of(md, "LRN off")
    assert lrn[1] == "+2.00 ± 12.71" and lrn[2] == "+0.00 ± 0.00"
    assert lrn[4:] == ["not resolved (the interval spans 0)", "12.71 > 3.0: NOT met", "2 / 2"]
    # Lighting off: -2 on both seeds, against the paper's +1.
    (light,) = rows_of(md, "PCA lighting off")
    assert light[1] == "-2.00 ± 0.00"
    assert light[4:] == ["resolved: error falls without lighting (opposite to the paper)", "0.00 <= 3.0: met", "0 / 2"]
    assert "each ablation <= 3.0: **not all met**" in md
    assert "- `--ablation lrn_off`: `model.lrn.enabled=false`" in md
    # ReLU reaches 50% in epoch 3 on both seeds; tanh in epoch 4 on both: 4/3.
    assert "ReLU 3, 3; tanh 4, 4; tanh / ReLU **1.33x** (paper: 6x" in md
    assert "does **not** reproduce the paper's ImageNet numbers" in md
    assert "10 classes, 3000 training and 1000 validation images of 44x44 px" in md
    assert "3 epochs, the rate divided by 10 after epoch 2; seeds [0, 1]" in md
    assert "2 at a time; the runs took 3.0 CPU-minutes in all" in md
    assert "Parameters: two-column 900, one-column 1,000 (11.1% more; the paper's: 59.80M vs 60.97M" in md

    (twocol,) = rows_of(md, "twocol")
    assert twocol == ["twocol", "off", "240.0", "533", ""]
    assert "- off: two-column / grouped step time **1.200** (target <= 1.05: NOT met)" in md
    assert "- off: two-column / torchvision AlexNet images/s: not measured in this run (target >= 1.00)" in md
    assert "conv3 2.00 MiB" in md
    (conv1,) = rows_of(md, "conv1")
    assert conv1 == ["conv1", "float32", "128x96x55x55", "4.0", "12.5", "8.1", "-", "-", "52", "-", "61", "-"]
    assert "forward_backward_speedup_at_least_10x **NOT met**" in md
    assert "forward+backward at least 10x torch at conv1, N = 128" in md
    assert rows_of(md, "72 -> 64") == [["72 -> 64", "6000", "3000", "2.00", "met"]]
    assert rows_of(md, "256 -> 224") == [["256 -> 224", "600", "480", "1.25", "NOT met"]]
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_with_one_seed_and_nothing_else(tmp_path):
    p = handmade_paper()
    for k in p["runs"]:
        p["runs"][k] = p["runs"][k][:1]
    p["seeds"] = [0]
    p["comparison"]["top1"]["onecol_minus_twocol"] = paper.paired(p["runs"]["twocol"], p["runs"]["onecol"], "top1")
    (tmp_path / "2030-01-02-paper.json").write_text(json.dumps(p))
    md = report(tmp_path)
    assert rows_of(md, "top-1")[0][3:4] == ["+3.00"]
    assert rows_of(md, "top-1")[0][7:] == ["one seed: no interval", "no interval", "1 / 1"]
    assert "## Throughput" not in md


def test_report_adds_the_comparisons_a_later_run_made_on_their_own(tmp_path):
    """A `bench.paper --ablations ... --no-onecol` file beside the full protocol's: its rows get a
    section of their own, and its two-column runs are checked against the full protocol's."""
    full = handmade_paper()
    (tmp_path / "2030-01-02-paper.json").write_text(json.dumps(full))
    sub = json.loads(json.dumps(full))
    sub["comparison"] = {}
    sub["runs"] = {"twocol": full["runs"]["twocol"],
                   "conv4_off": [run_of("conv4_off", 0, 44.0, 10.0), run_of("conv4_off", 1, 46.0, 12.0)]}
    sub["ablations"] = {"conv4_off": {"overrides": ["model.layers_off=[conv4]"], "claim": "about 2% top-1",
                                      "paper_minus_baseline": {"top1": 2.0},
                                      "top1_minus_baseline": paper.paired(sub["runs"]["twocol"], sub["runs"]["conv4_off"], "top1"),
                                      "top5_minus_baseline": paper.paired(sub["runs"]["twocol"], sub["runs"]["conv4_off"], "top5")}}
    (tmp_path / "2030-01-03-paper-subset.json").write_text(json.dumps(sub))
    md = report(tmp_path)
    assert "## Comparisons run on their own (2030-01-03-paper-subset.json)" in md
    assert "`python -m bench.paper --ablations conv4_off --no-onecol`: 2 seeds" in md
    assert "the same top-1 and top-5 errors on every seed" in md and "2.0 min for its 4 trainings" in md
    (row,) = rows_of(md, "conv4_off" if "conv4_off" not in ABLATIONS else ABLATIONS["conv4_off"].label)
    assert row[1] == "+4.00 ± 0.00" and row[4].startswith("resolved") and row[6] == "2 / 2"
    assert rows_of(md, "top-1")[0][3] == "+3.00 ± 0.00"  # the full protocol's table is still there
    sub["runs"]["twocol"][1]["top1"] += 0.5  # a baseline that no longer trains the same
    (tmp_path / "2030-01-03-paper-subset.json").write_text(json.dumps(sub))
    assert "the same errors on only 1 of 2 seeds" in report(tmp_path)


def test_report_without_results_says_so(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench.report", "--results", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 1 and "no results" in r.stderr


@pytest.mark.slow
def test_paper_protocol_end_to_end_at_a_toy_scale(tmp_path):
    data = synthesize(tmp_path / "synth", classes=10, per_class=10, image_size=44, val_per_class=3, workers=1)
    out = tmp_path / "results" / "2030-01-02-paper.json"
    # Three of the ablations (each run is seconds here): one with a speed claim, one with a
    # net of another size, and one against a baseline of its own (the tiny net has no dropout).
    r = subprocess.run([sys.executable, "-m", "bench.paper", "--preset", "cpu", "--data", str(data), "--seeds", "1",
                        "--epochs", "1", "--runs", str(tmp_path / "runs"), "--out", str(out), "data.batch_size=16",
                        "--ablations", "tanh,conv4_off,dropout_off"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["epochs"] == 1 and res["seeds"] == [0] and res["preset"] == "cpu"
    assert res["data"]["classes"] == 10 and res["data"]["train"] == 100 and res["data"]["val"] == 30
    assert "data.batch_size=16" in res["overrides"]["twocol"] and "data.batch_size=16" in res["overrides"]["onecol"]
    # dropout_off of a net without dropout: against the net with dropout, and itself the baseline net
    assert set(res["runs"]) == {"twocol", "onecol", "tanh", "conv4_off", "dropout_off_baseline", "dropout_off"}
    assert res["jobs"] == 2
    for name, a in res["ablations"].items():  # what `twocol train --ablation NAME` applies to its baseline
        base = load_config(res["configs"]["twocol"], res["overrides"]["twocol"] + a["baseline_overrides"])
        assert a["overrides"] == ablation_overrides(base, [name])
        assert a["baseline"] == ("dropout_off_baseline" if name == "dropout_off" else "twocol")
    # Two runs at a time in worker processes: the same result as a run in this process.
    again = paper.train_and_test(res["configs"]["twocol"], res["overrides"]["twocol"], 0, data, "cpu",
                                 tmp_path / "again", "twocol")
    assert (again["top1"], again["train_top1_by_epoch"]) == (res["runs"]["twocol"][0]["top1"],
                                                             res["runs"]["twocol"][0]["train_top1_by_epoch"])
    two, one = res["runs"]["twocol"][0], res["runs"]["onecol"][0]
    for run, net in ((two, "twocol"), (one, "onecol")):
        cfg = load_config(res["configs"][net], res["overrides"][net])
        assert run["params"] == sum(p.numel() for p in build_model(cfg, Placement.cpu()).parameters())
    assert load_config(res["configs"]["onecol"], res["overrides"]["onecol"]).model.arch == "onecol"
    for run in (two, one):
        assert run["val_images"] == 30 and len(run["train_top1_by_epoch"]) == 1
        assert 0 <= run["top1"] <= 100 and 0 <= run["top5"] <= run["top1"]
    assert res["comparison"]["top1"]["onecol_minus_twocol"] == [one["top1"] - two["top1"], None]
    assert res["comparison"]["top1"]["paper_onecol_minus_twocol"] == 1.7
    assert res["ablations"]["tanh"]["epochs_to_threshold"]["baseline"] in ([1], [None])
    md = report(out.parent)
    assert "10 classes, 100 training and 30 validation images of 44x44 px" in md
    assert rows_of(md, "conv4 removed") and rows_of(md, "dropout off") and "dropout off, overfitting:" in md


def stub_torchvision(made: list):
    """A stand-in for torchvision (not a dependency, not installed in CI): models.alexnet(num_classes)."""
    import types

    import torch.nn as nn

    def alexnet(num_classes=1000):
        net = nn.Sequential(nn.Conv2d(3, 4, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(),
                            nn.Linear(16, num_classes))
        made.append((net, [p.detach().clone() for p in net.parameters()]))
        return net

    tv = types.ModuleType("torchvision")
    tv.models = types.SimpleNamespace(alexnet=alexnet)
    return tv


def test_throughput_levers_and_torchvision_row_on_the_cpu(monkeypatch):
    from bench import throughput
    made = []
    monkeypatch.setitem(sys.modules, "torchvision", stub_torchvision(made))
    res = throughput.run("configs/tiny_twocol.yaml", "cpu", batch=8, steps=2, warmup=1, amps=["off"],
                         levers=["channels_last", "foreach", "cuda_graphs"], torchvision=True)
    rows = {r["variant"]: r for r in res["results"]}
    for name in ("twocol", "onecol", "grouped", "torchvision alexnet", "twocol + foreach update"):
        assert rows[name]["steps"] == 2 and rows[name]["images_per_s"] == 8 / rows[name]["median_step_s"], name
        assert rows[name]["tf32"] == throughput.tf32_state(), name
    # Every net gets its CUDA-graph row, skipped without CUDA.
    for name in ("twocol", "onecol", "grouped", "torchvision alexnet"):
        assert rows[name + " + CUDA graph"]["skipped"] == "CUDA graphs need a CUDA device"
    # The fused kernels take NCHW only: channels_last would time layout copies.
    assert rows["twocol + channels_last"]["skipped"].startswith("not applicable: the fused ReLU+LRN kernels")
    # torchvision's net took the same training steps: 3 updates moved every weight.
    (net, before), = made
    assert all(not torch.equal(p, b) for p, b in zip(net.parameters(), before))
    s = res["summary"]["off"]
    assert s["twocol_over_torchvision_images_per_s"] == rows["torchvision alexnet"]["median_step_s"] / rows["twocol"]["median_step_s"]
    assert set(s["levers_over_plain"]) == {"twocol + foreach update"}
    assert res["targets"] == {"twocol_over_grouped": 1.05, "twocol_over_torchvision_images_per_s": 1.0,
                              "bf16_over_fp32_step": 0.75, "twocol_over_grouped_graphed": 1.05,
                              "twocol_over_torchvision_images_per_s_graphed": 1.0}
    assert res["not_reached"] == []


def test_channels_last_lever_runs_where_relu_lrn_takes_any_layout(monkeypatch):
    from bench import throughput
    monkeypatch.setenv("TWOCOL_KERNELS", "reference")  # the reference LRN: plain torch ops, any layout
    res = throughput.run("configs/tiny_twocol.yaml", "cpu", batch=4, steps=1, warmup=0, amps=["off"],
                         levers=["channels_last"], nets=["twocol"])
    assert [r["steps"] for r in res["results"] if r["variant"] == "twocol + channels_last"] == [1]


def test_fp32_rows_with_tf32_off_record_it_and_restore_it():
    from bench import throughput
    before = throughput.tf32_state()
    res = throughput.run("configs/tiny_twocol.yaml", "cpu", batch=4, steps=1, warmup=0, amps=["off", "off-tf32-off"],
                         nets=["twocol"])
    state = {r["amp"]: r["tf32"] for r in res["results"]}
    assert state["off"] == before and throughput.tf32_state() == before
    assert (state["off-tf32-off"]["convolutions"], state["off-tf32-off"]["matmuls"]) == ("ieee", "ieee")


def test_throughput_file_is_written_up_front_and_after_every_round(monkeypatch, tmp_path):
    """A run stopped (here after its first timed round, as a time limit would) leaves a results
    file with the rows measured so far, marked partial, and what it did not reach."""
    from bench import throughput
    real = throughput.time_interleaved
    out = tmp_path / "t.json"

    def stopped(steps_by_name, steps, warmup, failed, after_round):
        def once(times, rounds):
            after_round(times, rounds)
            if rounds == warmup + 1:
                raise KeyboardInterrupt
        return real(steps_by_name, steps, warmup, failed, once)

    monkeypatch.setattr(throughput, "time_interleaved", stopped)
    with pytest.raises(KeyboardInterrupt):
        throughput.run("configs/tiny_twocol.yaml", "cpu", batch=2, steps=3, warmup=1, amps=["off", "bf16"],
                       nets=["twocol", "grouped"], out=out)
    res = json.loads(out.read_text())
    assert res["not_reached"] == ["off: twocol", "off: grouped", "bf16: twocol", "bf16: grouped"]
    assert [(r["variant"], r["steps"], r["partial"]) for r in res["results"]] == [
        ("twocol", 1, "1 of 3 timed steps so far"), ("grouped", 1, "1 of 3 timed steps so far")]
    assert all(r["median_step_s"] > 0 for r in res["results"])


def test_throughput_without_torchvision_skips_its_row(monkeypatch):
    from bench import throughput
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision raises ImportError
    res = throughput.run("configs/tiny_twocol.yaml", "cpu", batch=4, steps=1, warmup=0, amps=["off"], torchvision=True)
    (tv,) = [r for r in res["results"] if r["variant"] == "torchvision alexnet"]
    assert tv["skipped"].startswith("torchvision is not importable")
    assert "twocol_over_torchvision_images_per_s" not in res["summary"]["off"]


@pytest.mark.slow
def test_throughput_compile_lever_runs_on_the_cpu():
    from bench import throughput
    res = throughput.run("configs/tiny_twocol.yaml", "cpu", batch=4, steps=1, warmup=1, amps=["off"], levers=["compile"])
    (row,) = [r for r in res["results"] if r["variant"] == "twocol + torch.compile"]
    assert row["steps"] == 1 and row["relu_lrn"].startswith(("fused", "reference"))


def handmade_gpu_run():
    """What bench/gpu_check.sh leaves in <date>-gpu-<card>/: throughput with torchvision and a lever
    in fp32 and bf16, the end-to-end table, a profile."""
    rows = []
    for amp, scale in (("off", 1.0), ("bf16", 0.7)):
        for name, ms in (("twocol, column streams", 10.0), ("twocol, one stream", 10.5), ("grouped", 9.6),
                         ("torchvision alexnet", 12.5), ("twocol + CUDA graph", 8.0)):
            rows.append({"variant": name, "amp": amp, "median_step_s": scale * ms / 1e3,
                         "images_per_s": 128e3 / (scale * ms), "steps": 20})
        rows.append({"variant": "twocol + torch.compile", "amp": amp, "skipped": "failed: RuntimeError: no",
                     "relu_lrn": "reference (no fake kernel)"})
    throughput = {"benchmark": "throughput", "config": "alexnet_paper", "placement": "column A on cuda:0, column B on cuda:0",
                  "batch": 128, "environment": {**ENV, "gpu": "NVIDIA H100"}, "results": rows, "summary": {}}
    e2e = {"bench": "e2e", "environment": ENV, "machine": {"cpu": "Test CPU", "cores": 16, "gpu": "NVIDIA H100"},
           "preset": "gpu", "config": "configs/alexnet_paper.yaml", "overrides": ["data.batch_size=128"],
           "data": {"path": "data/e2e", "train_images": 10000, "image_size": 256, "crop": 224}, "batch": 128,
           "steps": 50, "warmup": 5, "load_average": [1.0, 2.0], "target": {"dali_gpu_over_synthetic": 0.9},
           "rows": [{"feed": "synthetic", "device": "cuda:0", "cpu_workers": 0, "images_per_s": 10000.0,
                     "data_wait_fraction": 0.0, "decode": "none", "over_synthetic": 1.0},
                    {"feed": "dali-gpu", "device": "cuda:0", "cpu_workers": 16, "images_per_s": 8500.0,
                     "data_wait_fraction": 0.125, "decode": "GPU", "over_synthetic": 0.85},
                    {"feed": "dali-cpu", "device": "cuda:0", "cpu_workers": 16, "skipped": "no DALI"}]}
    layer = {"forward": 1000.0, "backward": 2000.0, "update": 0.0}
    profile = {"config": "alexnet_paper", "placement": "column A on cuda:0, column B on cuda:0", "gpu": "NVIDIA H100",
               "amp": "off", "column_streams": True, "batch": 128, "median_step_s": 0.01, "torch": "2.11",
               "timeline": {"steps": 3, "both_columns_share": 0.25,
                            "layers": {"A": {"conv1": layer, "update": {"forward": 0, "backward": 0, "update": 500.0}},
                                       "B": {"conv1": layer}}},
               "cost_model": {"one_device_serial_s": 0.0065, "measured_step_s": 0.01, "assumptions": ["x", "y"],
                              "two_devices": [{"interconnect": "PCIe 2.0", "gbps": 8.0, "step_s": 0.005,
                                               "speedup_over_one_device": 1.3}]}}
    return {"throughput.json": throughput, "e2e.json": e2e, "profile-off.json": profile}


def test_report_reads_a_gpu_run_folder_with_the_targets(tmp_path):
    (tmp_path / "2030-01-02-paper.json").write_text(json.dumps(handmade_paper()))
    run = tmp_path / "2030-01-03-gpu-h100"
    run.mkdir()
    for name, v in handmade_gpu_run().items():
        (run / name).write_text(json.dumps(v))
    (run / "notes.json").write_text("{}")  # not a results file: ignored
    (run / "throughput-run1-old.json").write_text("{}")  # nor an earlier run kept beside the results
    md = report(tmp_path)
    assert "## Throughput (2030-01-03-gpu-h100/throughput.json)" in md
    assert ["twocol + CUDA graph", "off", "8.0", "16000", "0.800x the plain net's step"] in rows_of(md, "twocol + CUDA graph")
    (skipped,) = [r for r in rows_of(md, "twocol + torch.compile") if r[1] == "bf16"]
    assert skipped == ["twocol + torch.compile", "bf16", "-", "-", "skipped: failed: RuntimeError: no"]
    assert "- off: two-column / grouped step time **1.042** (target <= 1.05: met)" in md
    assert "- bf16: two-column / torchvision AlexNet images/s **1.250** (target >= 1.00: met)" in md
    assert "- bf16: bf16 / fp32 step time **0.700** (target <= 0.75: met)" in md
    assert "- off: column streams overlapped / serialised step time 0.952" in md
    assert rows_of(md, "dali-gpu") == [["dali-gpu", "GPU", "cuda:0", "8500", "85%", "12.5%", "16"]]
    assert rows_of(md, "dali-cpu") == [["dali-cpu", "-", "cuda:0", "-", "-", "-", "16 (skipped: no DALI)"]]
    assert "at least 90% of the synthetic rate: **85%, NOT met**" in md
    assert "## Timeline of the two columns (2030-01-03-gpu-h100/profile-off.json)" in md
    assert rows_of(md, "conv1") == [["conv1", "1.000", "2.000", "1.000", "2.000"]]
    assert rows_of(md, "update") == [["update", "0.500", "", "", ""]]
    assert rows_of(md, "PCIe 2.0") == [["PCIe 2.0", "8", "5.00", "1.30x"]]
    assert "both columns at once 25.0% of the step" in md


def test_e2e_harness_counts_waiting_for_data(monkeypatch):
    """bench/e2e.py's measure() on a clock that only the loader (2 s a batch) and the step (1 s)
    move: images/s over the timed steps and the share of them spent waiting for a batch."""
    from bench import e2e
    now = [0.0]
    monkeypatch.setattr(e2e.time, "perf_counter", lambda: now[0])
    seen = []

    def batches():
        while True:
            now[0] += 2.0
            yield torch.zeros(4, 3, 2, 2), torch.zeros(4, dtype=torch.long)

    def step(images, labels):
        seen.append(images.shape[0])
        now[0] += 1.0

    r = e2e.measure(batches(), step, torch.device("cpu"), steps=5, warmup=2, sync=lambda: None)
    assert seen == [4] * 7
    assert r == {"images_per_s": 20 / 15, "data_wait_fraction": 10 / 15, "wall_s": 15.0, "images": 20}


def test_a_variant_that_breaks_drops_out_with_its_reason():
    from bench.throughput import time_interleaved
    failed = {}
    times = time_interleaved({"ok": lambda: 1.0, "broken": lambda: 1 / 0}, steps=3, warmup=1, failed=failed)
    assert times == {"ok": [1.0, 1.0, 1.0], "broken": []}
    assert failed == {"broken": "failed in step 1: ZeroDivisionError: division by zero"}
