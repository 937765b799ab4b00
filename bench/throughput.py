"""Training-step throughput: the two-column net against its one-column comparison net, its
single-device grouped-convolution equivalent and (with --torchvision) torchvision's AlexNet, and
the speed levers one at a time, in one process, on synthetic tensors.

    python -m bench.throughput --gpus 0 --config configs/alexnet_paper.yaml --amp off,bf16 \\
        --torchvision --levers all

Every variant runs the same training step: forward (under bf16 autocast with --amp bf16),
cross entropy on float32 logits, backward, the paper's update (PaperSGD; torchvision's net
too). Reports each variant's median step time and images/s, and against the issue's targets:
two-column / grouped step time, two-column / torchvision images/s, bf16 / fp32 step time, and
each lever's step time over the plain two-column net's (below 1: it pays). On CUDA the
two-column net runs with each column on its own stream (as training does) and, as a second
row, with both on the caller's stream. The levers, each on the two-column net with column
streams:

  channels_last    weights and input in channels-last memory format
  cudnn_benchmark  torch.backends.cudnn.benchmark on while its steps run
  foreach          the update as multi-tensor ops (optim.foreach=true): fewer launches
  cuda_graphs      the whole step (forward, backward, update) captured once and replayed;
                   static shapes; rows with column streams and with one stream (CUDA only)
  compile          torch.compile over each column's stages; the fused ReLU+LRN op is compiled
                   when it has a fake (meta) kernel, else the variant runs TWOCOL_KERNELS=reference

A variant that cannot run here (no torchvision, no CUDA for graphs, a failed capture or
compile) is one line in the output and a row with its reason in the JSON.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.env import environment, write_result
from bench.ratios import BASELINE, TARGETS, throughput_summary
from bench.nets import ONECOL_FOR
from twocol.config import load_config
from twocol.devices import Placement
from twocol.inputs import ColumnInputs
from twocol.model import build_model
from twocol.optim import make_optimizer
from twocol.reference import GroupedNet

LEVERS = ("channels_last", "cudnn_benchmark", "foreach", "cuda_graphs", "compile")


class Skipped(Exception):
    """A variant that cannot run here; the message says why."""


def fused_op_compiles() -> str | None:
    """None when the fused ReLU+LRN op has a fake kernel registered through torch.library (what
    torch.compile needs to trace it), else why it is not used compiled."""
    from twocol import ops
    if ops.KERNELS_UNAVAILABLE:
        return ops.KERNELS_UNAVAILABLE
    try:  # torch's registry of Python-registered kernels; its place may move between versions
        from torch._library.simple_registry import singleton
        registered = singleton.find("twocol::relu_lrn").fake_impl.kernel is not None
    except (ImportError, AttributeError) as e:
        return f"cannot tell whether twocol::relu_lrn has a fake kernel on torch {torch.__version__} ({e})"
    return None if registered else "twocol::relu_lrn has no fake kernel registered"


@contextlib.contextmanager
def env_var(name: str, value: str | None):
    old = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if value is not None:
            if old is None:
                del os.environ[name]
            else:
                os.environ[name] = old


@contextlib.contextmanager
def cudnn_benchmark(on: bool):
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on or old
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


def compile_columns(net) -> None:
    """torch.compile over each column's stages (conv1-pool2, conv3-pool5, fc6, fc7) and fc8;
    the links, streams and concatenations between them stay eager."""
    for _, col in net.columns():
        for stage in ("to_pool2", "to_pool5", "to_fc6", "to_fc7"):
            setattr(col, stage, torch.compile(getattr(col, stage)))
    net.fc8.forward = torch.compile(net.fc8.forward)


def capture_step(body, opt, device: torch.device, devices) -> torch.cuda.CUDAGraph:
    """The training step `body` (forward, backward, update on static tensors) as a CUDA graph.
    Three warm-up steps on a side stream first, so that the optimiser's state, the cuBLAS/cuDNN
    workspaces and the autograd engine's streams exist before the capture (as torch.cuda.graphs
    asks); they update the weights like any step. The gradients are set to None before the
    capture, so each replay writes them afresh instead of accumulating."""
    side_stream = torch.cuda.Stream(device)
    side_stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side_stream):
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            body()
    torch.cuda.current_stream(device).wait_stream(side_stream)
    for d in devices:
        torch.cuda.synchronize(d)
    g = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(g):
        body()
    for d in devices:
        torch.cuda.synchronize(d)
    return g


def step_timer(net, cfg, placement, batch: int, amp: str, *, channels_last: bool = False, benchmark: bool = False,
               graph: bool = False, kernels: str | None = None):
    """A callable that runs one full training step (forward, backward, update) and returns its
    seconds. graph: capture the step once as a CUDA graph and replay it."""
    device = placement.a
    opt = make_optimizer(net, cfg.optim)
    side = cfg.model.input_size
    x = torch.randn(batch, 3, side, side)
    # The batch on each column's device, as the loader delivers it (inputs.py), for a net of
    # columns; a single module (the grouped reference, torchvision's) takes it on column A's device.
    columns = hasattr(net, "columns")
    x = ColumnInputs.copied(x, net.placement) if columns else x.to(device)
    y = torch.randint(0, cfg.model.num_classes, (batch,), device=device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
        last = lambda t: t.contiguous(memory_format=torch.channels_last)
        x = x.map(last) if columns else last(x)
    # A captured step must not use autocast's cache of cast weights: the cache would hold
    # tensors made during the capture, freed after it (torch.cuda.graphs asks for it off).
    cast = (torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=not graph) if amp == "bf16"
            else torch.autocast(device.type, enabled=False))
    devices = sorted({placement.a, placement.b}, key=str)

    def sync():
        if device.type == "cuda":
            for d in devices:
                torch.cuda.synchronize(d)

    def body():
        with cast:
            out = net(x)
        loss = F.cross_entropy(out.float(), y)
        loss.backward()
        opt.step()

    net.train()
    if graph:
        if device.type != "cuda":
            raise Skipped("CUDA graphs need a CUDA device")
        if placement.a != placement.b:
            raise Skipped("one CUDA graph covers one device; this placement has two")
        g = capture_step(body, opt, device, devices)

        def step() -> float:
            sync()
            t = time.perf_counter()
            g.replay()
            sync()
            return time.perf_counter() - t
        return step

    def step() -> float:
        with cudnn_benchmark(benchmark), env_var("TWOCOL_KERNELS", kernels):
            sync()
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            body()
            sync()
            return time.perf_counter() - t

    return step


def time_interleaved(steps_by_name: dict, steps: int, warmup: int, failed: dict | None = None) -> dict[str, list[float]]:
    """Seconds per step of each variant, the variants taking turns step by step (in a rotating
    order) so that a busy machine slows them alike. Timed one variant after the other, three
    runs on a shared 2-core machine gave two-column / grouped ratios of 0.52, 1.46 and 4.6.
    A variant whose step raises (a compile or a replay that breaks) drops out; `failed` gets
    its reason."""
    names = list(steps_by_name)
    times = {n: [] for n in names}
    failed = {} if failed is None else failed
    for i in range(warmup + steps):
        for n in names[i % len(names):] + names[:i % len(names)]:
            if n in failed:
                continue
            try:
                t = steps_by_name[n]()
            except Exception as e:  # the lever broke on this torch/device: a result, not a crash
                failed[n] = f"failed in step {i + 1}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                continue
            if i >= warmup:
                times[n].append(t)
    return times


def variants_for(cfg, one_cfg, placement, batch: int, amp: str, levers: list[str], torchvision: bool):
    """[(name, net, config, step callable or the reason it cannot run, notes)] for one precision."""
    out = []

    def add(name, make, conf, notes=None, **timer):
        try:
            net = make()
            out.append((name, net, conf, step_timer(net, conf, placement, batch, amp, **timer), notes or {}))
        except Skipped as e:
            out.append((name, None, conf, str(e), notes or {}))
        except Exception as e:  # a lever that breaks on this torch/device is a result, not a crash
            out.append((name, None, conf, f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                        notes or {}))

    cuda = placement.a.type == "cuda"

    def twocol(streams=True, conf=cfg):
        def make():
            net = build_model(conf, placement, seed=0)
            net.use_streams(streams and cuda)
            return net
        return make

    add(BASELINE[0] if cuda else BASELINE[1], twocol(), cfg)
    if cuda:
        add("twocol, one stream", twocol(streams=False), cfg)
    add("onecol", lambda: build_model(one_cfg, Placement(placement.a, placement.a), seed=0), one_cfg)
    add("grouped", lambda: GroupedNet(cfg.model, placement.a).copy_from(build_model(cfg, placement, seed=0)), cfg)
    if torchvision:
        def tv():
            try:  # torchvision is optional: a comparison, not a dependency
                import torchvision
            except ImportError as e:
                raise Skipped(f"torchvision is not importable ({e})") from None
            return torchvision.models.alexnet(num_classes=cfg.model.num_classes).to(placement.a)
        add("torchvision alexnet", tv, cfg)
    for lever in levers:
        if lever == "channels_last":
            add("twocol + channels_last", twocol(), cfg, channels_last=True)
        elif lever == "cudnn_benchmark":
            add("twocol + cudnn.benchmark", twocol(), cfg, benchmark=True)
        elif lever == "foreach":
            fcfg = copy.deepcopy(cfg)
            fcfg.optim.foreach = True
            add("twocol + foreach update", twocol(conf=fcfg), fcfg)
        elif lever == "cuda_graphs":
            add("twocol + CUDA graph", twocol(), cfg, graph=True)
            add("twocol, one stream + CUDA graph", twocol(streams=False), cfg, graph=True)
        elif lever == "compile":
            why = fused_op_compiles()
            kernels = None if why is None else "reference"
            notes = {"relu_lrn": "fused" if why is None else f"reference ({why})"}

            def compiled():
                net = twocol()()
                compile_columns(net)  # compiles lazily, at its first step (a warm-up step)
                return net
            add("twocol + torch.compile", compiled, cfg, notes, kernels=kernels)
    return out


def run(cfg_path: str, spec: str, batch: int, steps: int, warmup: int, amps: list[str], levers: list[str] = (),
        torchvision: bool = False, out: Path | None = None) -> dict:
    """Every variant at every precision; with `out`, the results so far are written after each
    precision (a run stopped by a time limit keeps what it measured)."""
    placement = Placement.parse(spec)
    cfg = load_config(cfg_path, [f"data.batch_size={batch}"])
    one_cfg = load_config(ONECOL_FOR.get(cfg.name, "configs/small_onecol.yaml"), [f"data.batch_size={batch}"])
    results, env = [], environment()
    for amp in amps:
        variants = variants_for(cfg, one_cfg, placement, batch, amp, list(levers), torchvision)
        runnable = {name: step for name, _, _, step, _ in variants if callable(step)}
        failed = {}
        times = time_interleaved(runnable, steps, warmup, failed)
        for name, net, _, step, notes in variants:
            step = failed.get(name, step)
            if not callable(step):
                results.append({"variant": name, "amp": amp, "skipped": step, **notes})
                print(f"{amp:>4}  {name:<34} skipped: {step}", flush=True)
                continue
            med = statistics.median(times[name])
            row = {"variant": name, "amp": amp, "median_step_s": med, "images_per_s": batch / med,
                   "steps": len(times[name]), **notes}
            if hasattr(net, "link_bytes") and net.link_bytes():
                row["link_bytes_per_step"] = {k: {d: v // (warmup + steps) for d, v in b.items()}
                                              for k, b in net.link_bytes().items()}
            results.append(row)
            print(f"{amp:>4}  {name:<34} {1000 * med:9.2f} ms/step  {batch / med:9.1f} img/s", flush=True)
        del variants, runnable
        if placement.a.type == "cuda":
            torch.cuda.empty_cache()
        record = {"benchmark": "throughput", "config": cfg.name, "placement": str(placement), "batch": batch,
                  "levers": list(levers), "targets": TARGETS, "environment": env, "results": results,
                  "summary": throughput_summary(results, amps)}
        if out is not None:
            write_result(record, out)
    for amp, s in record["summary"].items():
        print(f"{amp:>4}  " + "; ".join(f"{k} {v:.3f}" for k, v in s.items() if isinstance(v, float)))
    return record


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/small_twocol.yaml")
    p.add_argument("--gpus", default=None, help="placement: cpu, 0 or 0,1 (default: this machine's)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--amp", default="off", help="comma-separated: off, bf16")
    p.add_argument("--torchvision", action="store_true", help="add torchvision.models.alexnet() trained the same way")
    p.add_argument("--levers", default="", help=f"comma-separated, or all: {', '.join(LEVERS)}")
    p.add_argument("--out", type=Path, help="JSON results file (default: bench/results/<date>-throughput-<cpu|gpu>.json)")
    a = p.parse_args(argv)
    amps = [x for x in a.amp.split(",") if x]
    levers = list(LEVERS) if a.levers == "all" else [x for x in a.levers.split(",") if x]
    unknown = [x for x in levers if x not in LEVERS]
    if unknown:
        p.error(f"unknown lever {unknown[0]}; choose from {', '.join(LEVERS)} or all")
    kind = "gpu" if Placement.parse(a.gpus).a.type == "cuda" else "cpu"
    out = a.out or Path("bench/results") / f"{environment()['date']}-throughput-{kind}.json"
    run(a.config, a.gpus, a.batch, a.steps, a.warmup, amps, levers, a.torchvision, out=out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
