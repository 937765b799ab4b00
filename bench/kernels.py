"""Fused ReLU+LRN kernels against torch's relu + nn.LocalResponseNorm, in one process.

    python -m bench.kernels                   # CUDA if there is a GPU, else the CPU
    python -m bench.kernels --device cpu --threads 2 --repeats 15

For conv1's and conv2's activations with the paper's LRN (n=5, k=2, alpha=1e-4 on the sum,
beta=0.75; torch spells it alpha=5e-4) at N = 32 and 128: both columns together (conv1
N x 96 x 55 x 55, conv2 N x 256 x 27 x 27, what the CPU target names) and, by default on CUDA,
one column (48 x 55 x 55, 128 x 27 x 27: what each column's kernel sees); float32, and bfloat16
on CUDA. Times, through autograd, the forward pass (with requires_grad, as training runs it),
the backward pass alone (on a retained graph) and both; the raw kernels on preallocated
buffers; and, as the bandwidth reference, a device-to-device copy of x into a tensor like it.
On CUDA each timing is CUDA events around at least MIN_LAUNCHES back-to-back calls, each call on
the next of several copies of the row's buffers, which together exceed L2_FACTOR times the
device's L2, so that launch gaps hide behind queued work and the inputs come from device memory,
not from the L2. The host clock times the same calls up to the last launch: where the host's
time for a call the targets read is at least HOST_BOUND_SHARE of the device's, the device waited
for Python's dispatch and the time is the host's, not the kernel's (host_bound lists those
calls). Every target is computed over the rows past the L2 (fits_in_l2 false) with no host-bound
call. On the CPU each timing is one call on the host clock. All variants of a shape take turns
in every repeat, so that a noisy machine slows them alike; reports medians. Each kernel's
bandwidth counts every byte it must read and write once (forward: x in, y out; backward: grad
and x in, grad_input out); every row gives those bytes, the GB/s and the fraction of the copy's.
Also times writing a fresh tensor like x against an existing one: what each fused pass pays for
the tensor it returns on top of its kernel (on the CPU, page faults). The JSON is written before
the first row (with every row under not_reached) and after each row. Writes JSON to
bench/results/<date>-kernels-<cpu|gpu>.json unless --out says where.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from bench.env import environment
from bench.record import Record
from bench.targets import KERNELS_CPU, KERNELS_GPU
from twocol import ops
from twocol.config import ModelConfig
from twocol.layers import plan

# The ReLU+LRN layers of the paper's net (the config defaults), both columns and one column.
_PAPER = plan(ModelConfig())
LAYERS = {name + suffix: (columns * _PAPER[name].out, _PAPER[name].side_out, _PAPER[name].side_out)
          for suffix, columns in (("", 2), ("_column", 1)) for name in ("conv1", "conv2")}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SIZE, K, ALPHA, BETA = 5, 2.0, 1e-4, 0.75  # the paper's LRN, alpha on the plain sum
# CUDA timing: at least MIN_LAUNCHES calls per timing, on buffer sets that together exceed
# L2_FACTOR times the device's L2 (an H200's is 60 MB, an H100's 50 MB).
MIN_LAUNCHES, L2_FACTOR = 50, 4
# The targets (bench/targets.py). CPU: forward+backward at conv1, N = 128, float32. CUDA: every
# row past the L2 and not host-bound.
TARGET_CPU_SPEEDUP = KERNELS_CPU["forward_backward_speedup_at_least_10x"]
TARGET_GPU_SPEEDUP = KERNELS_GPU["every_pass_at_least_5x_torch"]
TARGET_FRACTION_OF_COPY = KERNELS_GPU["kernels_at_least_80pct_of_copy_bandwidth_past_l2"]
PASSES = ("forward", "backward", "forward_backward")
# The calls the CUDA targets read: torch's and the fused passes, the raw kernels and the copy.
TARGET_CALLS = tuple(f"{v}_{p}" for v in ("torch", "fused") for p in PASSES) + (
    "kernel_forward", "kernel_backward", "copy")
# A CUDA timing is the kernel's only while the host queues calls faster than the device runs
# them; at 80% of the device's time the host has too little slack left for a pause (the
# allocator, the garbage collector) to stay hidden, and at 100% or more it sets the pace.
HOST_BOUND_SHARE = 0.8


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def buffer_sets(touched_bytes: int, l2_bytes: int) -> int:
    """How many copies of a row's buffers the CUDA timing rotates over: the fewest whose bytes
    touched by one call (the least any variant touches: x in, one tensor out) exceed
    L2_FACTOR times the L2 together, so that no call finds its inputs left in the L2 by the
    calls before it. 1 without an L2 (the CPU path)."""
    if l2_bytes <= 0:
        return 1
    return L2_FACTOR * l2_bytes // touched_bytes + 1


def launches_for(sets: int) -> int:
    """Launches per CUDA timing: at least MIN_LAUNCHES, every buffer set equally often."""
    return sets * -(-MIN_LAUNCHES // sets)


def fits_in_l2(working_set_bytes: int, l2_bytes: int) -> bool:
    """A call whose bytes fit in the L2 can be served from it when repeated: its bandwidth says
    more about the cache than about the kernel, so such rows do not count toward the target."""
    return 0 < working_set_bytes <= l2_bytes


def l2_size(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).L2_cache_size if device.type == "cuda" else 0


def seconds_host(fn, sets: int = 1, launches: int = 1) -> tuple[float, float]:
    """The CPU's timing: wall time per call on the host clock (one call, unless a pretended L2
    asks for the rotation over buffer sets), twice: the host's work is the device's here."""
    start = time.perf_counter()
    for i in range(launches):
        fn(i % sets)
    t = (time.perf_counter() - start) / launches
    return t, t


def seconds_cuda(fn, sets: int, launches: int) -> tuple[float, float]:
    """The CUDA timing, per call: (device time from CUDA events around `launches` back-to-back
    calls, each on the next of `sets` buffer sets, so that launch gaps hide behind queued work
    and the inputs come from device memory, not the L2; the host's time to issue them, on its
    clock from the first call to the return of the last)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    t = time.perf_counter()
    for i in range(launches):
        fn(i % sets)
    host = time.perf_counter() - t
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / launches, host / launches


def host_bound(device_ms: dict, host_ms: dict) -> list[str]:
    """The calls the CUDA targets read whose host time is at least HOST_BOUND_SHARE of their
    device time: dispatch-bound, so their time says how fast Python issues them."""
    return [n for n in TARGET_CALLS if host_ms[n] >= HOST_BOUND_SHARE * device_ms[n]]


class Buffers:
    """`sets` copies of a row's tensors: x (conv1-like activations, requires_grad), the
    gradient g, and out and grad_input for the raw kernels and the copy."""

    def __init__(self, shape, dtype: torch.dtype, device: torch.device, sets: int):
        self.x = [(torch.randn(shape, device=device) * 30).to(dtype).requires_grad_() for _ in range(sets)]
        self.g = [torch.randn(shape, device=device).to(dtype) for _ in range(sets)]
        self.out = [torch.empty(shape, device=device, dtype=dtype) for _ in range(sets)]
        self.grad_input = [torch.empty(shape, device=device, dtype=dtype) for _ in range(sets)]
        self.nbytes = self.x[0].numel() * self.x[0].element_size()


def autograd_variants(buf: Buffers) -> dict:
    """name -> callable(set index): torch and fused, forward, backward alone, and both."""
    lrn = torch.nn.LocalResponseNorm(SIZE, alpha=ALPHA * SIZE, beta=BETA, k=K)  # torch: alpha/n
    forward = {"torch": lambda x: lrn(torch.relu(x)),
               "fused": lambda x: ops.relu_lrn(x, SIZE, K, ALPHA, BETA, "relu_lrn", "sum", backend="fused")}
    out = {}
    for name, fwd in forward.items():
        ys = [fwd(x) for x in buf.x]  # graphs to run backward on again and again
        out[f"{name}_forward"] = lambda i, fwd=fwd: fwd(buf.x[i])
        out[f"{name}_backward"] = lambda i, ys=ys: torch.autograd.grad(ys[i], buf.x[i], buf.g[i], retain_graph=True)
        out[f"{name}_forward_backward"] = lambda i, fwd=fwd: torch.autograd.grad(fwd(buf.x[i]), buf.x[i], buf.g[i])
    return out


def raw_kernels(buf: Buffers) -> dict:
    """name -> (callable(set index), bytes it must move at least): the raw kernels on
    preallocated buffers, writing a tensor like x (an existing one, and a fresh one: what every
    op returning a new tensor pays; on the CPU the OS faults in and zeroes its pages on first
    write), and a device-to-device copy of x, the bandwidth reference."""
    x = [t.detach() for t in buf.x]
    n = buf.nbytes
    return {
        "kernel_forward": (lambda i: torch.ops.twocol.relu_lrn_forward_into(
            x[i], SIZE, K, ALPHA, BETA, True, buf.out[i]), 2 * n),
        "kernel_backward": (lambda i: torch.ops.twocol.relu_lrn_backward_into(
            buf.g[i], x[i], SIZE, K, ALPHA, BETA, True, buf.grad_input[i]), 3 * n),
        "fill_existing": (lambda i: buf.out[i].fill_(1), n),
        "fill_fresh": (lambda i: torch.empty_like(buf.out[i]).fill_(1), n),
        "copy": (lambda i: buf.out[i].copy_(x[i]), 2 * n),
    }


def bench_shape(layer: str, batch: int, dtype: torch.dtype, device: torch.device, repeats: int,
                l2: int | None = None) -> dict:
    """One row. l2: the L2's bytes (default: the device's; the CPU has none); given on the CPU,
    the host clock times the rotation over buffer sets that CUDA runs (a dry run's check)."""
    shape = (batch, *LAYERS[layer])
    cuda = device.type == "cuda"
    l2 = l2_size(device) if l2 is None else l2
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    sets = buffer_sets(2 * nbytes, l2)
    launches = launches_for(sets) if cuda or l2 else 1
    buf = Buffers(shape, dtype, device, sets)
    autograd = autograd_variants(buf)
    kernels = raw_kernels(buf)
    with torch.no_grad():
        ref, got = autograd["torch_forward"](0).float(), autograd["fused_forward"](0).float()
        max_rel_diff = ((got - ref).abs() / ref.abs().clamp_min(1e-30)).max().item()
    del ref, got
    calls = {**autograd, **{name: fn for name, (fn, _) in kernels.items()}}
    for fn in calls.values():  # warm-up: allocator, thread pool, kernel loading
        for i in range(sets):
            fn(i)
    synchronize(device)
    times = {name: [] for name in calls}
    host = {name: [] for name in calls}
    load_before = os.getloadavg()[0]
    for _ in range(repeats):
        for name, fn in calls.items():
            t, h = seconds_cuda(fn, sets, launches) if cuda else seconds_host(fn, sets, launches)
            times[name].append(t)
            host[name].append(h)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    med_ms = {name: 1e3 * t for name, t in med.items()}
    host_ms = {name: 1e3 * statistics.median(ts) for name, ts in host.items()}
    copy_bps = kernels["copy"][1] / med["copy"]
    working_set = 2 * nbytes  # the least a pass moves (the forward kernel's x in, y out)
    row = {"layer": layer, "shape": list(shape), "dtype": str(dtype).replace("torch.", ""),
           "max_rel_diff_vs_torch": max_rel_diff,
           "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
           "median_ms": med_ms, "host_median_ms": host_ms,
           # On the CPU the host clock is the timing: nothing to tell apart.
           "host_bound": host_bound(med_ms, host_ms) if cuda else [],
           # The spread, as the machine may be shared: fastest and slowest repeat.
           "min_max_ms": {name: [1e3 * min(ts), 1e3 * max(ts)] for name, ts in times.items()},
           "speedup": {p: med[f"torch_{p}"] / med[f"fused_{p}"] for p in PASSES},
           "bytes_per_call": {name: b for name, (_, b) in kernels.items() if not name.startswith("fill")},
           "copy_GBps": copy_bps / 1e9,
           "fresh_tensor_extra_ms": 1e3 * (med["fill_fresh"] - med["fill_existing"]),
           "working_set_bytes": working_set, "l2_bytes": l2, "fits_in_l2": fits_in_l2(working_set, l2),
           "buffer_sets": sets, "calls_per_timing": launches}
    for name in ("kernel_forward", "kernel_backward"):
        bps = kernels[name][1] / med[name]
        row[f"{name}_GBps"] = bps / 1e9
        row[f"{name}_fraction_of_copy"] = bps / copy_bps
    return row


def table(rows: list[dict]) -> str:
    head = (f"{'layer':12} {'shape':>18} {'dtype':8} | {'fwd torch':>9} {'fused':>7} {'x':>5} | "
            f"{'bwd torch':>9} {'fused':>7} {'x':>5} | {'f+b torch':>9} {'fused':>7} {'x':>5} | "
            f"{'kern fwd':>8} {'GB/s':>6} {'copy%':>5} | {'kern bwd':>8} {'GB/s':>6} {'copy%':>5} | "
            f"{'copy GB/s':>9} {'MB fwd':>7} {'L2':>3} {'host':>4} {'fresh':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        m, s = r["median_ms"], r["speedup"]
        cells = [f"{r['layer']:12} {'x'.join(map(str, r['shape'])):>18} {r['dtype']:8}"]
        cells += [f"{m[f'torch_{p}']:9.2f} {m[f'fused_{p}']:7.2f} {s[p]:5.1f}" for p in PASSES]
        cells += [f"{m[k]:8.3f} {r[f'{k}_GBps']:6.0f} {100 * r[f'{k}_fraction_of_copy']:5.0f}"
                  for k in ("kernel_forward", "kernel_backward")]
        cells += [f"{r['copy_GBps']:9.1f} {r['bytes_per_call']['kernel_forward'] / 1e6:7.1f} "
                  f"{'in' if r['fits_in_l2'] else '-':>3} {len(r['host_bound']) or '-':>4} "
                  f"{r['fresh_tensor_extra_ms']:6.2f}"]
        lines.append(" | ".join(cells))
    return "\n".join(lines) + ("\n(times in ms, medians; x: torch time / fused time; GB/s: bytes the "
                                "kernel must move over its time; MB fwd: the forward kernel's bytes per "
                                "call; L2 'in': that fits in the L2; host: how many of the row's calls "
                                "are host-bound; a row in the L2 or with a host-bound call does not "
                                "count toward the targets; fresh: what writing a new tensor like x "
                                "costs over writing an existing one)")


def counted(row: dict) -> bool:
    """Whether a CUDA row counts toward the targets: past the L2, and no call it times for them
    host-bound."""
    return not row["fits_in_l2"] and not row["host_bound"]


def targets(rows: list[dict], device: torch.device) -> dict:
    """Which targets are met: on the CPU forward+backward at conv1, N = 128, float32 (absent where
    that row was not run); on CUDA, over the rows past the L2 with no host-bound call (both
    absent without such a row), each pass at least 5x torch and each kernel at least 80% of the
    copy's bandwidth."""
    if device.type != "cuda":
        row = next((r for r in rows if r["layer"] == "conv1" and r["shape"][0] == 128
                    and r["dtype"] == "float32"), None)
        return {} if row is None else {
            "forward_backward_speedup_at_least_10x":
                row["speedup"]["forward_backward"] >= TARGET_CPU_SPEEDUP}
    rows = [r for r in rows if counted(r)]
    if not rows:
        return {}
    return {"every_pass_at_least_5x_torch": all(
                s >= TARGET_GPU_SPEEDUP for r in rows for s in r["speedup"].values()),
            "kernels_at_least_80pct_of_copy_bandwidth_past_l2": all(
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
                   help="timed repeats per variant (default: 9 on the CPU, 5 on CUDA, each of "
                        f"at least {MIN_LAUNCHES} calls)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, default=None, help="JSON results file")
    p.add_argument("--pretend-l2-mib", type=float, default=None,
                   help="time as if the device had this L2 (a CPU dry run of the CUDA path's rotation)")
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
    repeats = a.repeats or (5 if gpu else 9)
    torch.manual_seed(0)

    l2 = l2_size(device) if a.pretend_l2_mib is None else int(a.pretend_l2_mib * 2 ** 20)
    load_before = os.getloadavg()
    env = environment()
    out = a.out or Path("bench/results") / f"{env['date']}-kernels-{'gpu' if gpu else 'cpu'}.json"
    planned = [(layer, int(batch), dtype) for layer in layers for batch in a.batches.split(",")
               for dtype in dtypes]

    def name(layer, batch, dtype) -> str:
        return f"{layer} N={batch} {str(dtype).replace('torch.', '')}"

    def derive(data: dict) -> dict:
        rows = data["rows"]
        return {"copy_GBps": statistics.median(r["copy_GBps"] for r in rows) if rows else None,
                "met": targets(rows, device), "load_average_1min_before_after": [load_before[0], os.getloadavg()[0]]}

    # The plan, before any row: a run cut short says what it missed.
    rec = Record(out, "kernels", planned=[name(*p) for p in planned], targets=KERNELS_GPU if gpu else KERNELS_CPU,
                 env=env, derive=derive,
                 what="fused ReLU+LRN (twocol.ops, backend=fused) vs torch relu + "
                      "nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2)",
                 device=str(device), repeats=repeats, l2_bytes=l2,
                 timing=(f"CUDA events around at least {MIN_LAUNCHES} back-to-back calls, each on the next "
                         f"of a row's buffer sets, which together exceed {L2_FACTOR}x the L2; the host clock "
                         f"around the same calls' launches; a call is host-bound where the host's time is at "
                         f"least {HOST_BOUND_SHARE:.0%} of the device's; the targets count the rows past the "
                         "L2 with no host-bound call" if gpu else
                         "host clock around one call" if not l2 else
                         f"host clock around the CUDA path's rotation, for a pretended L2 of {l2} bytes"),
                 note="medians of interleaved repeats; forward runs with requires_grad (what training "
                      "runs); backward on a retained graph; kernel bytes: forward 2 tensors (x in, y "
                      "out), backward 3 (grad, x in, grad_input out); the copy (x into a tensor like "
                      "it, 2 tensors) timed the same way in the same repeats as each row's kernels")
    for layer, batch, dtype in planned:
        rec.put(name(layer, batch, dtype), bench_shape(layer, batch, dtype, device, repeats, l2))
        rec.write()
        print(f"  {layer} N={batch} {rec['rows'][-1]['dtype']} done", file=sys.stderr, flush=True)
    res, rows = rec.data, rec["rows"]
    print(f"{device} ({env['gpu'] or env['cpu']}), {env['threads']} CPU threads, "
          f"copy {res['copy_GBps']:.1f} GB/s (median over rows), L2 {res['l2_bytes'] / 2 ** 20:.0f} MiB, "
          f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(table(rows))
    print("targets met:", json.dumps(res["met"]))
    if gpu and not res["met"]:
        print("(no row past the L2 without a host-bound call: the targets were not checked)")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
