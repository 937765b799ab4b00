"""The speed benchmarks: the report's speed sections on handmade results (a GPU run's folder
too), the throughput variants and levers, and the end-to-end bench's harness. The paper's
comparisons: test_bench_paper.py."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.report import __main__ as bench_report
from bench.record import normalise
from bench.report import speed

ROOT = Path(__file__).resolve().parents[1]

ENV = {"date": "2030-01-02", "commit": "abc1234", "torch": "2.13.0+cpu", "cpu": "Test CPU", "threads": 1,
       "gpu": None, "dali": "2.4.0"}


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
    """The report, in this process (its command line is run by test_report_without_results_says_so)."""
    assert bench_report.main(["--results", str(results)]) == 0
    return (results / "latest.md").read_text()


def test_report_speed_tables_from_handmade_results(tmp_path):
    for name, v in handmade_others().items():
        (tmp_path / f"2030-01-02-{name}.json").write_text(json.dumps(v))
    md = report(tmp_path)
    assert "No results yet: run `make bench`." in md  # no paper's comparisons among these
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


def test_report_without_results_says_so(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench.report", "--results", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 1 and "no results" in r.stderr


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
    rows = {r["variant"]: r for r in res["rows"]}
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
    assert [r["steps"] for r in res["rows"] if r["variant"] == "twocol + channels_last"] == [1]


def test_fp32_rows_with_tf32_off_record_it_and_restore_it():
    from bench import throughput
    before = throughput.tf32_state()
    res = throughput.run("configs/tiny_twocol.yaml", "cpu", batch=4, steps=1, warmup=0, amps=["off", "off-tf32-off"],
                         nets=["twocol"])
    state = {r["amp"]: r["tf32"] for r in res["rows"]}
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
    assert [(r["variant"], r["steps"], r["partial"]) for r in res["rows"]] == [
        ("twocol", 1, "1 of 3 timed steps so far"), ("grouped", 1, "1 of 3 timed steps so far")]
    assert all(r["median_step_s"] > 0 for r in res["rows"])


def test_throughput_without_torchvision_skips_its_row(monkeypatch):
    from bench import throughput
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision raises ImportError
    res = throughput.run("configs/tiny_twocol.yaml", "cpu", batch=4, steps=1, warmup=0, amps=["off"], torchvision=True)
    (tv,) = [r for r in res["rows"] if r["variant"] == "torchvision alexnet"]
    assert tv["skipped"].startswith("torchvision is not importable")
    assert "twocol_over_torchvision_images_per_s" not in res["summary"]["off"]


@pytest.mark.slow
def test_throughput_compile_lever_runs_on_the_cpu():
    from bench import throughput
    res = throughput.run("configs/tiny_twocol.yaml", "cpu", batch=4, steps=1, warmup=1, amps=["off"], levers=["compile"])
    (row,) = [r for r in res["rows"] if r["variant"] == "twocol + torch.compile"]
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


def test_a_gpu_run_without_its_commit_says_so_in_the_report(tmp_path):
    """A results file made from a tree without .git and without TWOCOL_COMMIT (or with an empty
    commit, "commit": "") reads as an unknown commit, with the reason where it has one."""
    run = tmp_path / "2030-01-03-gpu-h100"
    run.mkdir()
    files = handmade_gpu_run()
    files["throughput.json"]["environment"] = {**ENV, "gpu": "NVIDIA H100", "commit": None,
                                               "commit_missing": "/x is not a git checkout"}
    files["e2e.json"]["environment"] = {**ENV, "commit": ""}
    for name, v in files.items():
        (run / name).write_text(json.dumps(v))
    md = report(tmp_path)
    assert "NVIDIA H100; torch 2.13.0+cpu, DALI 2.4.0, commit unknown (/x is not a git checkout), 2030-01-02" in md
    assert "DALI 2.4.0, commit unknown (not recorded), 2030-01-02; load average" in md  # e2e
    assert "torch 2.11, commit unknown (not recorded)." in md  # the profile


def test_e2e_results_list_every_feed_before_the_jpeg_set_is_made(monkeypatch, tmp_path):
    """Making the 10,000 files is the first thing the bench spends time on: a limit that runs
    out while it does still leaves the results file, every feed not reached."""
    from bench import e2e
    out = tmp_path / "e2e.json"
    seen = []

    def cut(data_dir, images, workers):
        seen.append(json.loads(out.read_text()))
        raise KeyboardInterrupt  # a time limit, while the set is made

    monkeypatch.setattr(e2e, "dataset", cut)
    with pytest.raises(KeyboardInterrupt):
        e2e.main(["--gpus", "cpu", "--preset", "tiny", "--images", "40", "--data-dir", str(tmp_path / "d"),
                  "--out", str(out)])
    (before,) = seen
    assert before == json.loads(out.read_text())
    assert before["rows"] == [] and before["not_reached"] == list(e2e.FEEDS) and not before["complete"]
    assert before["data"]["train_images"] is None and before["data"]["made_s"] is None
    assert before["data"]["path"] == str(e2e.dataset_root(tmp_path / "d", 40))
    md = "\n".join(speed.e2e_section({**normalise(before), "_file": "e2e.json"}))
    assert "the set of stored 256 px JPEGs (`" in md and "not made: the run was cut short before" in md


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
