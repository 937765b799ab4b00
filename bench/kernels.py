"""Fused ReLU+LRN kernels against torch's relu + nn.LocalResponseNorm, in one process.

    python -m bench.kernels                   # CUDA if there is a GPU, else the CPU
    python -m bench.kernels --device cpu --threads 2 --repeats 15

For conv1's and conv2's activations with the paper's LRN (n=5, k=2, alpha=1e-4 on the sum,
beta=0.75; torch spells it alpha=5e-4) at N = 32 and 128: both columns together (conv1
N x 96 x 55 x 55, conv2 N x 256 x 27 x 27, what the CPU target names) and, by default on CUDA,
one column (48 x 55 x 55, 128 x 27 x 27: what each column's kernel sees); float32, and bfloat16
on CUDA. Times, through autograd, the forward pass (with requires_grad, as training runs it),
the backward pass alone (on a retained graph) and both; the raw kernels on preallocated
buffers; and a device-to-device copy of COPY_BYTES. All variants of a shape take turns in
every repeat, so that a noisy machine slows them alike; reports medians. Each kernel's
bandwidth counts every byte it must read and write once (forward: x in, y out; backward:
grad and x in, grad_input out) and is given as a fraction of the copy's, measured in the same
repeats. Also times writing a fresh tensor like x against an existing one: what each fused
pass pays for the tensor it returns on top of its kernel (on the CPU, page faults). Writes JSON
to bench/results/<date>-kernels-<cpu|gpu>.json unless --out says where.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from bench.env import environment, write_result
from twocol import ops

LAYERS = {"conv1": (96, 55, 55), "conv2": (256, 27, 27),
          "conv1_column": (48, 55, 55), "conv2_column": (128, 27, 27)}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SIZE, K, ALPHA, BETA = 5, 2.0, 1e-4, 0.75  # the paper's LRN, alpha on the plain sum
COPY_BYTES = 1 << 28  # well past any L2 (an H100's is 50 MB)
# The targets. CPU: forward+backward at conv1, N = 128, float32. CUDA: every row.
TARGET_CPU_SPEEDUP = 10.0
TARGET_GPU_SPEEDUP, TARGET_FRACTION_OF_COPY = 5.0, 0.8
PASSES = ("forward", "backward", "forward_backward")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn, device: torch.device, iters: int = 1) -> float:
    """Wall time of one call of fn, averaged over `iters` back-to-back calls."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / iters


def autograd_variants(x: torch.Tensor, g: torch.Tensor) -> dict:
    """name -> callable: torch and fused, forward, backward alone, and both."""
    lrn = torch.nn.LocalResponseNorm(SIZE, alpha=ALPHA * SIZE, beta=BETA, k=K)  # torch: alpha/n
    forward = {"torch": lambda: lrn(torch.relu(x)),
               "fused": lambda: ops.relu_lrn(x, SIZE, K, ALPHA, BETA, "relu_lrn", "sum",
                                             backend="fused")}
    out = {}
    for name, fwd in forward.items():
        y = fwd()  # a graph to run backward on again and again
        out[f"{name}_forward"] = fwd
        out[f"{name}_backward"] = lambda y=y: torch.autograd.grad(y, x, g, retain_graph=True)
        out[f"{name}_forward_backward"] = lambda fwd=fwd: torch.autograd.grad(fwd(), x, g)
    return out


def raw_kernels(x: torch.Tensor, g: torch.Tensor) -> dict:
    """name -> (callable, bytes it must move at least), on preallocated buffers."""
    x = x.detach()
    out, grad_input = torch.empty_like(x), torch.empty_like(x)
    nbytes = x.numel() * x.element_size()
    return {
        "kernel_forward": (lambda: torch.ops.twocol.relu_lrn_forward_into(
            x, SIZE, K, ALPHA, BETA, True, out), 2 * nbytes),
        "kernel_backward": (lambda: torch.ops.twocol.relu_lrn_backward_into(
            g, x, SIZE, K, ALPHA, BETA, True, grad_input), 3 * nbytes),
    }


def fill_variants(x: torch.Tensor) -> dict:
    """Writing a tensor like x: an existing one, and a fresh one (what every op returning a new
    tensor pays: on the CPU the OS faults in and zeroes its pages on first write)."""
    existing = torch.empty_like(x)
    nbytes = x.numel() * x.element_size()
    return {"fill_existing": (lambda: existing.fill_(1), nbytes),
            "fill_fresh": (lambda: torch.empty_like(existing).fill_(1), nbytes)}


def copy_variant(device: torch.device) -> tuple:
    """A device-to-device copy of COPY_BYTES, counting bytes read and written."""
    src = torch.empty(COPY_BYTES // 4, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    return lambda: dst.copy_(src), 2 * COPY_BYTES


def bench_shape(layer: str, batch: int, dtype: torch.dtype, device: torch.device, repeats: int,
                iters: int) -> dict:
    shape = (batch, *LAYERS[layer])
    x = (torch.randn(shape, device=device) * 30).to(dtype).requires_grad_()  # conv1-like
    g = torch.randn(shape, device=device).to(dtype)
    autograd = autograd_variants(x, g)
    kernels = {**raw_kernels(x, g), **fill_variants(x), "copy": copy_variant(device)}
    with torch.no_grad():
        ref, got = autograd["torch_forward"]().float(), autograd["fused_forward"]().float()
        max_rel_diff = ((got - ref).abs() / ref.abs().clamp_min(1e-30)).max().item()
    del ref, got
    for fn in autograd.values():  # warm-up: allocator, thread pool, kernel loading
        fn()
    times = {name: [] for name in [*autograd, *kernels]}
    load_before = os.getloadavg()[0]
    for _ in range(repeats):
        for name, fn in autograd.items():
            times[name].append(seconds(fn, device))
        for name, (fn, _) in kernels.items():
            times[name].append(seconds(fn, device, iters))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    copy_bps = kernels["copy"][1] / med["copy"]
    row = {"layer": layer, "shape": list(shape), "dtype": str(dtype).replace("torch.", ""),
           "max_rel_diff_vs_torch": max_rel_diff,
           "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
           "median_ms": {name: 1e3 * t for name, t in med.items()},
           # The spread, as the machine may be shared: fastest and slowest repeat.
           "min_max_ms": {name: [1e3 * min(ts), 1e3 * max(ts)] for name, ts in times.items()},
           "speedup": {p: med[f"torch_{p}"] / med[f"fused_{p}"] for p in PASSES},
           "copy_GBps": copy_bps / 1e9,
           "fresh_tensor_extra_ms": 1e3 * (med["fill_fresh"] - med["fill_existing"])}
    for name in ("kernel_forward", "kernel_backward"):
        bps = kernels[name][1] / med[name]
        row[f"{name}_GBps"] = bps / 1e9
        row[f"{name}_fraction_of_copy"] = bps / copy_bps
    return row


def table(rows: list[dict]) -> str:
    head = (f"{'layer':12} {'shape':>18} {'dtype':8} | {'fwd torch':>9} {'fused':>7} {'x':>5} | "
            f"{'bwd torch':>9} {'fused':>7} {'x':>5} | {'f+b torch':>9} {'fused':>7} {'x':>5} | "
            f"{'kern fwd':>8} {'copy%':>5} | {'kern bwd':>8} {'copy%':>5} | {'copy GB/s':>9} "
            f"{'fresh':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        m, s = r["median_ms"], r["speedup"]
        cells = [f"{r['layer']:12} {'x'.join(map(str, r['shape'])):>18} {r['dtype']:8}"]
        cells += [f"{m[f'torch_{p}']:9.2f} {m[f'fused_{p}']:7.2f} {s[p]:5.1f}" for p in PASSES]
        cells += [f"{m[k]:8.3f} {100 * r[f'{k}_fraction_of_copy']:5.0f}"
                  for k in ("kernel_forward", "kernel_backward")]
        cells += [f"{r['copy_GBps']:9.1f} {r['fresh_tensor_extra_ms']:6.2f}"]
        lines.append(" | ".join(cells))
    return "\n".join(lines) + ("\n(times in ms, medians; x: torch time / fused time; fresh: what "
                                "writing a new tensor like x costs over writing an existing one)")


def targets(rows: list[dict], device: torch.device) -> dict:
    """The issue's targets: on the CPU forward+backward at conv1, N = 128, float32 (absent where
    that row was not run); on CUDA every row, each pass, and each kernel."""
    if device.type != "cuda":
        row = next((r for r in rows if r["layer"] == "conv1" and r["shape"][0] == 128
                    and r["dtype"] == "float32"), None)
        return {} if row is None else {
            "forward_backward_speedup_at_least_10x":
                row["speedup"]["forward_backward"] >= TARGET_CPU_SPEEDUP}
    return {
        "every_pass_at_least_5x_torch": all(
            s >= TARGET_GPU_SPEEDUP for r in rows for s in r["speedup"].values()),
        "kernels_at_least_80pct_of_copy_bandwidth": all(
            r[f"{k}_fraction_of_copy"] >= TARGET_FRACTION_OF_COPY
            for r in rows for k in ("kernel_forward", "kernel_backward"))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batches", default="32,128", help="batch sizes (default: %(default)s)")
    p.add_argument("--layers", default=None,
                   help=f"of {', '.join(LAYERS)} (default: conv1,conv2 on the CPU, all on CUDA)")
    p.add_argument("--dtypes", default=None,
                   help="of float32, bfloat16, float16 (default: float32 on the CPU, "
                        "float32,bfloat16 on CUDA)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats per variant (default: 9 on the CPU, 20 on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, default=None, help="JSON results file")
    a = p.parse_args(argv)

    device = torch.device(a.device)
    gpu = device.type == "cuda"
    if a.threads:
        torch.set_num_threads(a.threads)
    layers = (a.layers or (",".join(LAYERS) if gpu else "conv1,conv2")).split(",")
    dtypes = [DTYPES[d] for d in (a.dtypes or ("float32,bfloat16" if gpu else "float32")).split(",")]
    for dtype in dtypes:
        why_not = ops.fused_unsupported(torch.empty(1, 1, 1, 1, device=device, dtype=dtype), SIZE,
                                        K, ALPHA)
        if why_not:
            print(f"bench/kernels.py: the fused kernels cannot run on {device}: {why_not}",
                  file=sys.stderr)
            return 2
    repeats = a.repeats or (20 if gpu else 9)
    iters = 10 if gpu else 1  # back-to-back kernel calls per timing, hiding launch gaps on CUDA
    torch.manual_seed(0)

    load_before = os.getloadavg()
    rows = []
    for layer in layers:
        for batch in (int(b) for b in a.batches.split(",")):
            for dtype in dtypes:
                rows.append(bench_shape(layer, batch, dtype, device, repeats, iters))
                print(f"  {layer} N={batch} {rows[-1]['dtype']} done", file=sys.stderr, flush=True)
    env = environment()
    copy_gbps = statistics.median(r["copy_GBps"] for r in rows)
    result = {
        "what": "fused ReLU+LRN (twocol.ops, backend=fused) vs torch relu + "
                "nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2)",
        "environment": env, "device": str(device), "repeats": repeats,
        "kernel_calls_per_timing": iters, "copy_GBps": copy_gbps,
        "note": "medians of interleaved repeats on a shared machine; forward runs with "
                "requires_grad (what training runs); backward on a retained graph; kernel "
                "bytes: forward 2 tensors (x in, y out), backward 3 (grad, x in, grad_input "
                "out); copy measured in the same repeats as each row's kernels",
        "load_average_1min_before_after": [load_before[0], os.getloadavg()[0]],
        "results": rows, "targets_met": targets(rows, device)}
    print(f"{device} ({env['gpu'] or env['cpu']}), {env['threads']} CPU threads, "
          f"copy {copy_gbps:.1f} GB/s (median over rows), load average {load_before[0]:.1f} "
          f"before, {os.getloadavg()[0]:.1f} after")
    print(table(rows))
    print("targets met:", json.dumps(result["targets_met"]))
    out = a.out or Path("bench/results") / f"{env['date']}-kernels-{'gpu' if gpu else 'cpu'}.json"
    write_result(result, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
