"""Fused ReLU+LRN kernels against torch's relu + nn.LocalResponseNorm, in one process.

    python -m bench.kernels                   # CUDA if there is a GPU, else the CPU
    python -m bench.kernels --device cpu --threads 2 --repeats 5

For conv1's (N, 96, 55, 55) and conv2's (N, 256, 27, 27) float32 activations at N = 32 and
128, with the paper's LRN (n=5, k=2, alpha=1e-4 on the sum, beta=0.75; torch spells it
alpha=5e-4): the training forward and forward+backward through autograd, each variant timed
alone, the variants taking turns in every repeat so that a noisy machine slows them alike;
reports medians. Also times the raw kernels (forward, backward) and a device-to-device copy,
and reports each kernel's bandwidth, counting every byte read and written once (forward:
x in, y and s^-beta out; backward: grad, x, s^-beta in, grad_input out), as a fraction of the
copy's. Writes JSON to bench/results/<date>-kernels-<cpu|gpu>.json unless --out says where.
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

LAYERS = {"conv1": (96, 55, 55), "conv2": (256, 27, 27)}
SIZE, K, ALPHA, BETA = 5, 2.0, 1e-4, 0.75  # the paper's LRN, alpha on the plain sum
COPY_BYTES = 1 << 28  # well past any L2 (an H100's is 50 MB)
# The targets, checked at conv1 with N = 128.
TARGET_SPEEDUP, TARGET_FRACTION_OF_COPY = 5.0, 0.8


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


def variants(x: torch.Tensor, g: torch.Tensor) -> dict:
    """name -> callable, for the autograd-level comparison."""
    lrn = torch.nn.LocalResponseNorm(SIZE, alpha=ALPHA * SIZE, beta=BETA, k=K)  # torch: alpha/n

    def torch_fwd():
        return lrn(torch.relu(x))

    def fused_fwd():
        return ops.relu_lrn(x, SIZE, K, ALPHA, BETA, "relu_lrn", "sum", backend="fused")

    return {"torch_forward": torch_fwd, "fused_forward": fused_fwd,
            "torch_forward_backward": lambda: torch.autograd.grad(torch_fwd(), x, g),
            "fused_forward_backward": lambda: torch.autograd.grad(fused_fwd(), x, g)}


def raw_kernels(x: torch.Tensor, g: torch.Tensor) -> dict:
    """name -> (callable, bytes it must move at least), on preallocated buffers."""
    out, inv, grad_input = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
    x = x.detach()
    torch.ops.twocol.relu_lrn_forward_into(x, SIZE, K, ALPHA, BETA, True, out, inv)
    nbytes = x.numel() * x.element_size()
    return {
        "kernel_forward": (lambda: torch.ops.twocol.relu_lrn_forward_into(
            x, SIZE, K, ALPHA, BETA, True, out, inv), 3 * nbytes),
        "kernel_backward": (lambda: torch.ops.twocol.relu_lrn_backward_into(
            g, x, inv, SIZE, K, ALPHA, BETA, True, grad_input), 4 * nbytes),
    }


def copy_bandwidth(device: torch.device, repeats: int, iters: int) -> float:
    """Bytes/s of a device-to-device copy, counting bytes read and written."""
    src = torch.empty(COPY_BYTES // 4, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    t = statistics.median(seconds(lambda: dst.copy_(src), device, iters) for _ in range(repeats))
    return 2 * COPY_BYTES / t


def bench_shape(layer: str, batch: int, device: torch.device, repeats: int, iters: int,
                copy_bps: float) -> dict:
    shape = (batch, *LAYERS[layer])
    x = (torch.randn(shape, device=device) * 30).requires_grad_()  # conv1-like magnitudes
    g = torch.randn(shape, device=device)
    autograd_level = variants(x, g)
    kernels = raw_kernels(x, g)
    with torch.no_grad():
        ref, got = autograd_level["torch_forward"](), autograd_level["fused_forward"]()
        max_rel_diff = ((got - ref).abs() / ref.abs().clamp_min(1e-30)).max().item()
    del ref, got
    for fn in autograd_level.values():  # warm-up: allocator, thread pool, kernel loading
        fn()
    times = {name: [] for name in [*autograd_level, *kernels]}
    for _ in range(repeats):
        for name, fn in autograd_level.items():
            times[name].append(seconds(fn, device))
        for name, (fn, _) in kernels.items():
            times[name].append(seconds(fn, device, iters))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    row = {"layer": layer, "shape": list(shape), "max_rel_diff_vs_torch": max_rel_diff,
           "median_ms": {name: 1e3 * t for name, t in med.items()},
           "speedup": {p: med[f"torch_{p}"] / med[f"fused_{p}"]
                       for p in ("forward", "forward_backward")}}
    for name, (_, nbytes) in kernels.items():
        bps = nbytes / med[name]
        row[f"{name}_GBps"] = bps / 1e9
        row[f"{name}_fraction_of_copy"] = bps / copy_bps
    return row


def table(rows: list[dict]) -> str:
    head = (f"{'layer':6} {'shape':>18} | {'fwd torch':>9} {'fused':>7} {'x':>5} | "
            f"{'fwd+bwd torch':>13} {'fused':>7} {'x':>5} | {'kernel fwd':>10} {'copy%':>5} | "
            f"{'kernel bwd':>10} {'copy%':>5}")
    lines = [head, "-" * len(head)]
    for r in rows:
        m = r["median_ms"]
        lines.append(
            f"{r['layer']:6} {'x'.join(map(str, r['shape'])):>18} | "
            f"{m['torch_forward']:9.2f} {m['fused_forward']:7.2f} {r['speedup']['forward']:5.1f} | "
            f"{m['torch_forward_backward']:13.2f} {m['fused_forward_backward']:7.2f} "
            f"{r['speedup']['forward_backward']:5.1f} | "
            f"{m['kernel_forward']:10.3f} {100 * r['kernel_forward_fraction_of_copy']:5.0f} | "
            f"{m['kernel_backward']:10.3f} {100 * r['kernel_backward_fraction_of_copy']:5.0f}")
    return "\n".join(lines) + "\n(times in ms, medians; x: torch time / fused time)"


def targets(rows: list[dict], device: torch.device) -> dict:
    """The issue's targets at conv1, N = 128 (None where that shape was not run)."""
    row = next((r for r in rows if r["layer"] == "conv1" and r["shape"][0] == 128), None)
    if row is None:
        return {}
    met = {"forward_backward_speedup_at_least_5x":
           row["speedup"]["forward_backward"] >= TARGET_SPEEDUP}
    if device.type == "cuda":
        met["forward_and_backward_speedup_at_least_5x"] = all(
            s >= TARGET_SPEEDUP for s in row["speedup"].values())
        met["kernels_at_least_80pct_of_copy_bandwidth"] = all(
            row[f"{k}_fraction_of_copy"] >= TARGET_FRACTION_OF_COPY
            for k in ("kernel_forward", "kernel_backward"))
    return met


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batches", default="32,128", help="batch sizes (default: %(default)s)")
    p.add_argument("--layers", default="conv1,conv2", help="of conv1, conv2 (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats per variant (default: 5 on the CPU, 20 on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, default=None, help="JSON results file")
    a = p.parse_args(argv)

    device = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    why_not = ops.fused_unsupported(torch.empty(1, 1, 1, 1, device=device), SIZE, K, ALPHA)
    if why_not:
        print(f"bench/kernels.py: the fused kernels cannot run on {device}: {why_not}",
              file=sys.stderr)
        return 2
    gpu = device.type == "cuda"
    repeats = a.repeats or (20 if gpu else 5)
    iters = 10 if gpu else 1  # back-to-back kernel calls per timing, hiding launch gaps on CUDA
    torch.manual_seed(0)

    load_before = os.getloadavg()
    copy_bps = copy_bandwidth(device, repeats, iters)
    rows = []
    for layer in a.layers.split(","):
        for batch in (int(b) for b in a.batches.split(",")):
            rows.append(bench_shape(layer, batch, device, repeats, iters, copy_bps))
            print(f"  {layer} N={batch} done", file=sys.stderr, flush=True)
    env = environment()
    result = {
        "what": "fused ReLU+LRN (twocol.ops, backend=fused) vs torch relu + "
                "nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2), float32",
        "environment": env, "device": str(device), "repeats": repeats,
        "kernel_calls_per_timing": iters, "copy_GBps": copy_bps / 1e9,
        "note": "medians of interleaved repeats on a shared machine; forward runs with "
                "requires_grad (what training runs)",
        "load_average_1min_before_after": [load_before[0], os.getloadavg()[0]],
        "results": rows, "targets_met": targets(rows, device)}
    print(f"{device} ({env['gpu'] or env['cpu']}), {env['threads']} CPU threads, "
          f"copy {copy_bps / 1e9:.1f} GB/s, load average {load_before[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    print(table(rows))
    print("targets met:", json.dumps(result["targets_met"]))
    out = a.out or Path("bench/results") / f"{env['date']}-kernels-{'gpu' if gpu else 'cpu'}.json"
    write_result(result, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
