"""bench/kernels.py's CUDA timing arithmetic, on the CPU with a pretended L2: the buffer sets a
row rotates over exceed 4x the L2, every set is used equally often in at least 50 calls, calls
whose host time dominates are flagged, and the targets count only the rows past the L2 with no
host-bound call."""
import json

import torch

from bench import kernels

MB = 2 ** 20
H200_L2 = 60 * MB


def test_buffer_sets_together_exceed_four_l2s_and_no_set_is_spare():
    for touched in (1, 12 * MB, 37 * MB, 95 * MB, 240 * MB, 241 * MB, 600 * MB):
        sets = kernels.buffer_sets(touched, H200_L2)
        assert sets * touched > 4 * H200_L2, touched
        assert sets == 1 or (sets - 1) * touched <= 4 * H200_L2, touched  # the fewest that do
    assert kernels.buffer_sets(37 * MB, H200_L2) == 7  # 7 x 37 = 259 MB > 240 MB, 6 x 37 = 222 MB
    assert kernels.buffer_sets(600 * MB, H200_L2) == 1
    assert kernels.buffer_sets(10, 0) == 1  # no L2: the CPU's method, one set


def test_launches_are_at_least_fifty_and_use_every_set_equally():
    for sets in (1, 3, 7, 49, 50, 51, 120):
        n = kernels.launches_for(sets)
        assert n >= 50 and n % sets == 0 and n - sets < 50, sets


def target_row(fits=False, fraction=0.9, speedup=6.0, host_bound=()):
    return {"fits_in_l2": fits, "speedup": {"forward": speedup, "backward": 6.0, "forward_backward": 6.0},
            "kernel_forward_fraction_of_copy": fraction, "kernel_backward_fraction_of_copy": fraction,
            "host_bound": list(host_bound)}


def test_rows_that_fit_in_the_l2_are_labelled_and_left_out_of_every_target():
    assert kernels.fits_in_l2(H200_L2, H200_L2) and not kernels.fits_in_l2(H200_L2 + 1, H200_L2)
    assert not kernels.fits_in_l2(1, 0)  # no L2: nothing fits
    cuda = torch.device("cuda")
    met = {"every_pass_at_least_5x_torch": True, "kernels_at_least_80pct_of_copy_bandwidth_past_l2": True}
    # A slow row inside the L2 fails neither target; a slow row past it does.
    assert kernels.targets([target_row(True, 0.3, 2.0), target_row()], cuda) == met
    assert kernels.targets([target_row(True, 0.9), target_row(False, 0.7)], cuda) == {
        **met, "kernels_at_least_80pct_of_copy_bandwidth_past_l2": False}
    assert kernels.targets([target_row(True), target_row(False, 0.9, 4.9)], cuda) == {
        **met, "every_pass_at_least_5x_torch": False}
    # Only rows inside the L2: no target is checked at all.
    assert kernels.targets([target_row(True, 0.9)], cuda) == {}


def test_calls_whose_host_time_dominates_are_flagged_and_their_rows_left_out_of_the_targets():
    """N = 32, one column: ~4 us of GPU work behind ~9-45 us of Python per call, so the events
    time the dispatch. A call counts as host-bound from 80% of its device time on; the fills are
    timed but no target reads them."""
    device = {name: 0.010 for name in kernels.TARGET_CALLS}
    device.update(fill_existing=0.003, fill_fresh=0.004)
    host = {name: 0.005 for name in device}
    host.update(fill_existing=0.009, fill_fresh=0.040)  # host-bound, but no target reads them
    assert kernels.host_bound(device, host) == []
    host.update(fused_forward=0.008, kernel_forward=0.0079, copy=0.045)
    assert kernels.host_bound(device, host) == ["fused_forward", "copy"]
    cuda = torch.device("cuda")
    # A host-bound row past the L2 with a slow speed-up fails nothing; without such a row
    # beside it, nothing is checked.
    dispatch_bound = target_row(False, 0.2, 1.5, ["fused_forward"])
    assert kernels.targets([dispatch_bound, target_row()], cuda) == {
        "every_pass_at_least_5x_torch": True, "kernels_at_least_80pct_of_copy_bandwidth_past_l2": True}
    assert kernels.targets([dispatch_bound, target_row(True)], cuda) == {}
    # The CPU's target does not look at either flag.
    cpu_row = {"layer": "conv1", "shape": [128, 96, 55, 55], "dtype": "float32", "fits_in_l2": True,
               "host_bound": ["copy"], "speedup": {"forward_backward": 11.0}}
    assert kernels.targets([cpu_row], torch.device("cpu")) == {"forward_backward_speedup_at_least_10x": True}


def test_a_row_rotates_its_calls_over_the_sets_a_pretended_l2_asks_for(monkeypatch):
    """A tiny layer, 2 x 8 x 5 x 5 in float32: 1,600 bytes per tensor; the forward kernel
    touches two (3,200). With a 3,000-byte L2 the sets must exceed 12,000 bytes: 4 sets, 52
    calls per timing; with 4,096 bytes, 6 sets, 54 calls, and the row fits in the L2. Every
    call of the forward kernel is counted by set."""
    monkeypatch.setitem(kernels.LAYERS, "tiny", (8, 5, 5))
    calls = []
    real = kernels.raw_kernels

    def counted(buf):
        out = real(buf)
        fn, nbytes = out["kernel_forward"]
        out["kernel_forward"] = (lambda i: (calls.append(i), fn(i))[1], nbytes)
        return out

    def fused_only(buf):  # torch's LRN takes ~20 ms a call on a loaded CPU, even this small
        out = real_autograd(buf)
        return {**out, **{name.replace("fused", "torch"): fn for name, fn in out.items() if name.startswith("fused")}}

    real_autograd = kernels.autograd_variants
    monkeypatch.setattr(kernels, "raw_kernels", counted)
    monkeypatch.setattr(kernels, "autograd_variants", fused_only)
    r = kernels.bench_shape("tiny", 2, torch.float32, torch.device("cpu"), repeats=2, l2=3000)
    assert (r["buffer_sets"], r["calls_per_timing"], r["l2_bytes"]) == (4, 52, 3000)
    # The host clock is the CPU's timing: its time beside the device's is the same, nothing flagged.
    assert r["host_median_ms"] == r["median_ms"] and r["host_bound"] == []
    assert r["bytes_per_call"] == {"kernel_forward": 3200, "kernel_backward": 4800, "copy": 3200}
    assert r["working_set_bytes"] == 3200 and not r["fits_in_l2"]
    assert calls == [0, 1, 2, 3] + [i % 4 for i in range(52)] * 2  # warm-up, then two timings
    assert r["kernel_forward_GBps"] == 3200 / (r["median_ms"]["kernel_forward"] / 1e3) / 1e9
    small = kernels.bench_shape("tiny", 2, torch.float32, torch.device("cpu"), repeats=1, l2=4096)
    assert small["fits_in_l2"] and (small["buffer_sets"], small["calls_per_timing"]) == (6, 54)
    # No L2 (a plain CPU run): one set, one call per timing, as the CPU always timed.
    plain = kernels.bench_shape("tiny", 2, torch.float32, torch.device("cpu"), repeats=1)
    assert (plain["buffer_sets"], plain["calls_per_timing"], plain["fits_in_l2"]) == (1, 1, False)


def test_the_results_file_lists_unreached_rows_and_shrinks_as_rows_finish(monkeypatch, tmp_path):
    out = tmp_path / "k.json"
    seen = []

    def row(layer, batch, dtype, device, repeats, l2):
        seen.append(json.loads(out.read_text())["not_reached"])  # the file as it stood before this row
        if layer == "conv2":
            raise KeyboardInterrupt  # a time limit, mid-row
        return {"layer": layer, "shape": [batch], "dtype": "float32", "copy_GBps": 1.0, "speedup": {}}

    monkeypatch.setattr(kernels, "bench_shape", row)
    try:
        kernels.main(["--device", "cpu", "--layers", "conv1,conv2", "--batches", "2", "--out", str(out)])
    except KeyboardInterrupt:
        pass
    assert seen == [["conv1 N=2 float32", "conv2 N=2 float32"], ["conv2 N=2 float32"]]
    res = json.loads(out.read_text())
    assert [r["layer"] for r in res["rows"]] == ["conv1"] and res["not_reached"] == ["conv2 N=2 float32"]


def test_report_labels_rows_in_the_l2_and_gives_bytes_and_bandwidth(tmp_path):
    from bench.report import speed as report
    row = lambda shape, fits, mb: {
        "layer": "conv2", "dtype": "bfloat16", "shape": shape, "fits_in_l2": fits,
        "speedup": {"forward": 6.0, "backward": 5.5, "forward_backward": 5.8},
        "bytes_per_call": {"kernel_forward": 2 * mb * 1e6, "kernel_backward": 3 * mb * 1e6, "copy": 2 * mb * 1e6},
        "kernel_forward_GBps": 3500.0, "kernel_backward_GBps": 3300.0,
        "kernel_forward_fraction_of_copy": 0.85, "kernel_backward_fraction_of_copy": 0.8,
        "host_bound": ["fused_forward", "copy"] if shape[0] == 32 else []}
    env = {"date": "2030-01-02", "commit": "abc", "torch": "2.11", "gpu": "NVIDIA H200", "dali": None}
    k = {"environment": env, "device": "cuda", "repeats": 5, "timing": "CUDA events", "_file": "k.json",
         "rows": [row([32, 256, 27, 27], True, 12), row([128, 256, 27, 27], False, 47.8)],
         "met": kernels.targets([row([32], False, 1), row([128], False, 1)], torch.device("cuda")),
         "not_reached": ["conv1 N=128 float32"]}
    md = "\n".join(report.kernels_section(k))
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("| conv2")]
    assert [c[6:] for c in cells] == [["24.0 / 36.0", "3500", "85", "3300", "80", "in L2", "fused_forward, copy"],
                                      ["95.6 / 143.4", "3500", "85", "3300", "80", "past L2", "-"]]
    assert "over the rows past the L2 with no host-bound call" in md
    assert "kernels_at_least_80pct_of_copy_bandwidth_past_l2 **met**" in md
    assert "Not reached (the run was cut short): conv1 N=128 float32." in md
    # A results file without host times says so instead of passing for "none host-bound".
    old = {key: v for key, v in row([128, 256, 27, 27], False, 47.8).items() if key != "host_bound"}
    md = "\n".join(report.kernels_section({**k, "rows": [old]}))
    (line,) = [line for line in md.splitlines() if line.startswith("| conv2")]
    assert line.strip("|").split("|")[-1].strip() == "not recorded"
