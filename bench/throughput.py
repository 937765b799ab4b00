"""Training-step throughput: the two-column net against its one-column comparison net, its
single-device grouped-convolution equivalent and (with --torchvision) torchvision's AlexNet, and
the speed levers one at a time, in one process, on synthetic tensors.

    python -m bench.throughput --gpus 0 --config configs/alexnet_paper.yaml --amp off,bf16 \\
        --torchvision --levers all

Every variant runs training's own step (twocol.step.train_step): forward (under bf16 autocast
with --amp bf16), cross entropy on float32 logits, backward, the paper's update (PaperSGD;
torchvision's net too). Reports each variant's median step time and images/s, and against the
targets of bench/targets.py: two-column / grouped step time, two-column / torchvision images/s (eager
against eager, CUDA graph against CUDA graph), bf16 / fp32 step time, and each lever's step
time over the plain two-column net's (below 1: it pays). On CUDA the two-column net runs with
each column on its own stream (as training does) and, as a second row, with both on the
caller's stream.

Precisions (--amp): off (float32 with torch's defaults, which let cuDNN's convolutions use
TF32 and keep matmuls in full float32), off-tf32-off (float32 with TF32 off for both) and bf16
(autocast). Every row records the TF32 state it ran under.

The levers, each on the two-column net with column streams:

  channels_last    weights and input in channels-last memory format; not applicable (a row
                   saying why) while the fused ReLU+LRN kernels run, as they take contiguous
                   NCHW only and would copy around every call
  cudnn_benchmark  torch.backends.cudnn.benchmark on, in a process of its own (cuDNN's plan
                   cache, keyed without the flag, would otherwise hand it the baseline's plans)
  foreach          the update as multi-tensor ops (optim.foreach=true): fewer launches
  cuda_graphs      the whole step (forward, backward, update) captured once and replayed;
                   static shapes; a graph row for every net (CUDA only)
  compile          torch.compile over each column's stages; the fused ReLU+LRN op is compiled
                   when it has a fake (meta) kernel, else the variant runs TWOCOL_KERNELS=reference

A variant that cannot run here (no torchvision, no CUDA for graphs, a failed capture or
compile) is one line in the output and a row with its reason in the JSON. The JSON is written
before the first step (every row planned listed under not_reached) and again after every round
of steps, so that a run cut short keeps what it measured and says what it did not reach.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.env import environment
from bench.ratios import BASELINE, GRAPH, throughput_met, throughput_summary
from bench.record import Record
from bench.targets import THROUGHPUT
from bench.nets import ONECOL_FOR
from twocol import ops
from twocol.config import load_config
from twocol.devices import Placement
from twocol.inputs import ColumnInputs
from twocol.model import build_model
from twocol.optim import make_optimizer
from twocol.reference import GroupedNet
from twocol.step import train_step

LEVERS = ("channels_last", "cudnn_benchmark", "foreach", "cuda_graphs", "compile")
# The nets compared (--variants); "one_stream" is the two-column net with both columns on the
# caller's stream (CUDA only).
NETS = ("twocol", "one_stream", "onecol", "grouped", "torchvision")
# --amp: (autocast, TF32 for convolutions and matmuls: None leaves torch's defaults)
PRECISIONS = {"off": ("off", None), "off-tf32-off": ("off", False), "bf16": ("bf16", None)}
CUDNN_BENCHMARK = "twocol + cudnn.benchmark"


class Skipped(Exception):
    """A variant that cannot run here; the message says why."""


def fused_op_compiles() -> str | None:
    """None when the fused ReLU+LRN op has a fake kernel registered through torch.library (what
    torch.compile needs to trace it), else why it is not used compiled."""
    if ops.KERNELS_UNAVAILABLE:
        return ops.KERNELS_UNAVAILABLE
    try:  # torch's registry of Python-registered kernels; its place may move between versions
        from torch._library.simple_registry import singleton
        registered = singleton.find("twocol::relu_lrn").fake_impl.kernel is not None
    except (ImportError, AttributeError) as e:
        return f"cannot tell whether twocol::relu_lrn has a fake kernel on torch {torch.__version__} ({e})"
    return None if registered else "twocol::relu_lrn has no fake kernel registered"


def channels_last_problem(device: torch.device) -> str | None:
    """Why channels_last cannot be measured as a layout here, or None."""
    probe = torch.empty(1, 8, 2, 2, device=device).to(memory_format=torch.channels_last)
    if ops.resolve_backend(probe) == "fused":
        return ("not applicable: the fused ReLU+LRN kernels take contiguous NCHW only "
                "(kernels/relu_lrn_op.h), so every fused op would copy its channels-last input to "
                "NCHW and return NCHW; the row would time those copies, not the layout")
    return None


def tf32_state() -> dict:
    """Whether float32 convolutions (cuDNN) and matmuls may run as TF32, as torch reports it.
    Torch 2.9 and later have per-backend fp32_precision settings ("tf32", "ieee", or "none":
    the legacy default, which for matmuls follows float32_matmul_precision); reading the legacy
    allow_tf32 flags there can raise once the new ones were set, so only one API is read."""
    b = torch.backends
    conv = getattr(getattr(b.cudnn, "conv", None), "fp32_precision", None)
    if conv is not None and hasattr(b.cuda.matmul, "fp32_precision"):
        return {"api": "fp32_precision", "convolutions": conv, "matmuls": b.cuda.matmul.fp32_precision,
                "float32_matmul_precision": torch.get_float32_matmul_precision()}
    return {"api": "allow_tf32", "convolutions": "tf32" if b.cudnn.allow_tf32 else "ieee",
            "matmuls": "tf32" if b.cuda.matmul.allow_tf32 else "ieee",
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


@contextlib.contextmanager
def tf32(allowed: bool | None):
    """TF32 for convolutions and matmuls on or off meanwhile; None changes nothing."""
    if allowed is None:
        yield
        return
    b = torch.backends
    if tf32_state()["api"] == "fp32_precision":
        places = [(b.cudnn.conv, "fp32_precision"), (b.cuda.matmul, "fp32_precision")]
        value = "tf32" if allowed else "ieee"
    else:
        places = [(b.cudnn, "allow_tf32"), (b.cuda.matmul, "allow_tf32")]
        value = allowed
    old = [getattr(obj, name) for obj, name in places]
    for obj, name in places:
        setattr(obj, name, value)
    try:
        yield
    finally:
        for (obj, name), v in zip(places, old):
            setattr(obj, name, v)


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


def compile_columns(net, backend: str = "inductor") -> None:
    """torch.compile over each column's stages (the layers between two links: conv1-pool2,
    conv3-pool5, fc6, fc7 in the paper's net) and fc8; the links, streams and concatenations
    between them stay eager."""
    for _, col in net.columns():
        col.stages = [torch.compile(stage, backend=backend) for stage in col.stages]
    net.fc8.forward = torch.compile(net.fc8.forward, backend=backend)


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


def synthetic_batch(cfg, net, placement, batch: int, generator: torch.Generator | None = None):
    """A random batch (images, labels) as the loader delivers it: for a net of columns on each
    column's device (inputs.py), for a single module (the grouped reference, torchvision's) on
    column A's device."""
    side = cfg.model.input_size
    x = torch.randn(batch, 3, side, side, generator=generator)
    y = torch.randint(0, cfg.model.num_classes, (batch,), generator=generator).to(placement.a)
    return (ColumnInputs.copied(x, net.placement) if hasattr(net, "columns") else x.to(placement.a)), y


def step_timer(net, cfg, placement, images, labels, amp: str, *, channels_last: bool = False,
               graph: bool = False, kernels: str | None = None):
    """A callable that runs one full training step (train_step) and returns its seconds.
    graph: capture the step once as a CUDA graph and replay it."""
    device = placement.a
    opt = make_optimizer(net, cfg.optim)
    if channels_last:
        net.to(memory_format=torch.channels_last)
        last = lambda t: t.contiguous(memory_format=torch.channels_last)
        images = images.map(last) if isinstance(images, ColumnInputs) else last(images)
    devices = sorted({placement.a, placement.b}, key=str)

    def sync():
        if device.type == "cuda":
            for d in devices:
                torch.cuda.synchronize(d)

    def body():
        # A captured step must not use autocast's cache of cast weights (torch.cuda.graphs).
        train_step(net, opt, images, labels, amp, device, cast_cache=not graph)

    net.train()
    if graph:
        g = capture_step(body, opt, device, devices)

        def replay() -> float:
            sync()
            t = time.perf_counter()
            g.replay()
            sync()
            return time.perf_counter() - t
        return replay

    def step() -> float:
        with env_var("TWOCOL_KERNELS", kernels):
            sync()
            t = time.perf_counter()
            body()
            sync()
            return time.perf_counter() - t

    return step


def time_interleaved(steps_by_name: dict, steps: int, warmup: int, failed: dict | None = None,
                     after_round=None) -> dict[str, list[float]]:
    """Seconds per step of each variant, the variants taking turns step by step (in a rotating
    order) so that a busy machine slows them alike. Timed one variant after the other, three
    runs on a shared 2-core machine gave two-column / grouped ratios of 0.52, 1.46 and 4.6.
    A variant whose step raises (a compile or a replay that breaks) drops out; `failed` gets
    its reason. after_round(times, rounds done) is called after every round."""
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
        if after_round is not None:
            after_round(times, i + 1)
    return times


def plan(placement, levers: list[str], nets: list[str], compile_backend: str = "inductor") -> list[tuple[str, str, dict]]:
    """[(variant name, net, step options)] for one precision, in order; the nets' names only,
    nothing built yet."""
    cuda = placement.a.type == "cuda"
    names = {"twocol": BASELINE[0] if cuda else BASELINE[1], "one_stream": "twocol, one stream",
             "onecol": "onecol", "grouped": "grouped", "torchvision": "torchvision alexnet"}
    chosen = [n for n in NETS if n in nets and (n != "one_stream" or cuda)]
    out = [(names[n], n, {}) for n in chosen]
    for lever in levers:
        if lever == "channels_last":
            out.append(("twocol + channels_last", "twocol", {"channels_last": True}))
        elif lever == "cudnn_benchmark":
            out.append((CUDNN_BENCHMARK, "twocol", {"own_process": True}))
        elif lever == "foreach":
            out.append(("twocol + foreach update", "twocol", {"foreach": True}))
        elif lever == "cuda_graphs":
            out += [(names[n] + GRAPH, n, {"graph": True}) for n in chosen]
        elif lever == "compile":
            out.append(("twocol + torch.compile", "twocol", {"compile": compile_backend}))
    return out


def build(net_name: str, cfg, one_cfg, placement):
    """A fresh net (seed 0) and its config."""
    cuda = placement.a.type == "cuda"
    if net_name in ("twocol", "one_stream"):
        net = build_model(cfg, placement, seed=0)
        net.use_streams(cuda and net_name == "twocol")
        return net, cfg
    if net_name == "onecol":
        return build_model(one_cfg, Placement(placement.a, placement.a), seed=0), one_cfg
    if net_name == "grouped":
        return GroupedNet(cfg.model, placement.a).copy_from(build_model(cfg, placement, seed=0)), cfg
    try:  # torchvision is optional: a comparison, not a dependency
        import torchvision
    except ImportError as e:
        raise Skipped(f"torchvision is not importable ({e})") from None
    return torchvision.models.alexnet(num_classes=cfg.model.num_classes).to(placement.a), cfg


def make_variant(name, net_name, opts, cfg, one_cfg, placement, batch: int, amp: str):
    """(net, step callable, notes), or (None, why it cannot run, notes)."""
    notes = {}
    try:
        if opts.get("channels_last"):
            why = channels_last_problem(placement.a)
            if why:
                raise Skipped(why)
        if opts.get("graph") and placement.a.type != "cuda":
            raise Skipped("CUDA graphs need a CUDA device")
        if opts.get("graph") and placement.a != placement.b:
            raise Skipped("one CUDA graph covers one device; this placement has two")
        conf = cfg
        if opts.get("foreach"):
            conf = copy.deepcopy(cfg)
            conf.optim.foreach = True
        net, conf = build(net_name, conf, one_cfg, placement)
        kernels = None
        if opts.get("compile"):
            why = fused_op_compiles()
            kernels = None if why is None else "reference"
            notes["relu_lrn"] = "fused" if why is None else f"reference ({why})"
            compile_columns(net, opts["compile"])  # compiles lazily, at its first step (a warm-up step)
            notes["compile_backend"] = opts["compile"]
        images, labels = synthetic_batch(conf, net, placement, batch)
        return net, step_timer(net, conf, placement, images, labels, amp, channels_last=bool(opts.get("channels_last")),
                               graph=bool(opts.get("graph")), kernels=kernels), notes
    except Skipped as e:
        return None, str(e), notes
    except Exception as e:  # a lever that breaks on this torch/device is a result, not a crash
        return None, f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", notes


def own_process_rows(args: list[str], name: str, amps: list[str]) -> dict[str, dict]:
    """amp -> the baseline's row measured by `python -m bench.throughput ARGS` in a process of
    its own (cuDNN's plan cache and torch's settings start afresh there), renamed `name`."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "rows.json"
        r = subprocess.run([sys.executable, "-m", "bench.throughput", *args, "--out", str(out)],
                           capture_output=True, text=True)
        record = json.loads(out.read_text()) if out.exists() else {"rows": []}
    rows = {row["amp"]: {**row, "variant": name, "process": "own", "cudnn_benchmark": record["cudnn_benchmark"]}
            for row in record["rows"]}
    last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {amp: rows.get(amp, {"variant": name, "skipped": f"failed in its own process (exit {r.returncode}): {last}"})
            for amp in amps}


def timed_row(name: str, times: list[float], batch: int, planned_steps: int, net, rounds: int, extra: dict) -> dict:
    row = {"variant": name, "steps": len(times), **extra}
    if times:
        med = statistics.median(times)
        row.update(median_step_s=med, images_per_s=batch / med)
    if len(times) < planned_steps:
        row["partial"] = f"{len(times)} of {planned_steps} timed steps so far"
    if net is not None and hasattr(net, "link_bytes") and net.link_bytes():
        row["link_bytes_per_step"] = {k: {d: v // rounds for d, v in b.items()} for k, b in net.link_bytes().items()}
    return row


def run(cfg_path: str, spec: str | None, batch: int, steps: int, warmup: int, amps: list[str], levers: list[str] = (),
        torchvision: bool = False, out: Path | None = None, nets: list[str] | None = None,
        compile_backend: str = "inductor") -> dict:
    """Every variant at every precision; with `out`, the results file is written before the
    first step (every planned row under not_reached) and after every round of steps, so that a
    run stopped by a time limit keeps what it measured."""
    placement = Placement.parse(spec)
    cfg = load_config(cfg_path, [f"data.batch_size={batch}"])
    one_cfg = load_config(ONECOL_FOR.get(cfg.name, "configs/small_onecol.yaml"), [f"data.batch_size={batch}"])
    nets = [n for n in (nets or ["twocol", "one_stream", "onecol", "grouped"]) if n != "torchvision"]
    nets += ["torchvision"] if torchvision else []
    planned = plan(placement, list(levers), nets, compile_backend)
    def derive(data: dict) -> dict:
        summary = throughput_summary(data["rows"], amps)
        return {"summary": summary, "met": throughput_met(summary)}

    rec = Record(out, "throughput", planned=[f"{amp}: {name}" for amp in amps for name, _, _ in planned],
                 targets=THROUGHPUT, derive=derive, config=cfg.name, placement=str(placement), batch=batch,
                 steps=steps, warmup=warmup, levers=list(levers), cudnn_benchmark=torch.backends.cudnn.benchmark)

    def put(amp: str, row: dict, done: bool = True) -> None:
        rec.put(f"{amp}: {row['variant']}", {"variant": row["variant"], "amp": amp, **row}, done)
    for amp in amps:
        autocast_amp, allow_tf32 = PRECISIONS[amp]
        with tf32(allow_tf32):
            state = {"tf32": tf32_state()}
            here = [p for p in planned if not p[2].get("own_process")]
            variants = {name: make_variant(name, net_name, opts, cfg, one_cfg, placement, batch, autocast_amp)
                        for name, net_name, opts in here}
            for name, (_, step, notes) in variants.items():
                if not callable(step):
                    put(amp, {"variant": name, "skipped": step, **notes, **state})
                    print(f"{amp:>12}  {name:<40} skipped: {step}", flush=True)
            runnable = {name: step for name, (_, step, _) in variants.items() if callable(step)}
            failed = {}

            def after_round(times, rounds, final=False):
                for name in runnable:
                    net, _, notes = variants[name]
                    if name in failed:
                        put(amp, {"variant": name, "skipped": failed[name], **notes, **state})
                    else:
                        put(amp, timed_row(name, times[name], batch, steps, net, rounds, {**notes, **state}),
                                done=final)
                rec.write()

            times = time_interleaved(runnable, steps, warmup, failed, after_round)
            after_round(times, warmup + steps, final=True)
            for name in runnable:
                row = rec.row(f"{amp}: {name}")
                if "median_step_s" in row:
                    print(f"{amp:>12}  {name:<40} {1000 * row['median_step_s']:9.2f} ms/step  "
                          f"{row['images_per_s']:9.1f} img/s", flush=True)
                else:
                    print(f"{amp:>12}  {name:<40} {row.get('skipped', 'no timed step')}", flush=True)
            del variants, runnable
            if placement.a.type == "cuda":
                torch.cuda.empty_cache()
    for name, _, opts in planned:
        if opts.get("own_process"):
            args = ["--config", cfg_path, "--batch", str(batch), "--steps", str(steps), "--warmup", str(warmup),
                    "--amp", ",".join(amps), "--variants", "twocol", "--cudnn-benchmark"] + (["--gpus", spec] if spec else [])
            for amp, row in own_process_rows(args, name, amps).items():
                if placement.a.type != "cuda":
                    row["note"] = "no cuDNN here: the baseline again, in a process of its own"
                put(amp, row)
                print(f"{amp:>12}  {name:<40} " + (f"{1000 * row['median_step_s']:9.2f} ms/step (own process)"
                                                   if "median_step_s" in row else row["skipped"]), flush=True)
            rec.write()
    rec.write()
    for amp, s in rec["summary"].items():
        print(f"{amp:>12}  " + "; ".join(f"{k} {v:.3f}" for k, v in s.items() if isinstance(v, float)))
    return rec.data


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/small_twocol.yaml")
    p.add_argument("--gpus", default=None, help="placement: cpu, 0 or 0,1 (default: this machine's)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--amp", default="off", help=f"comma-separated: {', '.join(PRECISIONS)}")
    p.add_argument("--variants", default="twocol,one_stream,onecol,grouped",
                   help=f"comma-separated nets: {', '.join(NETS)} (default: %(default)s)")
    p.add_argument("--torchvision", action="store_true", help="add torchvision.models.alexnet() trained the same way")
    p.add_argument("--levers", default="", help=f"comma-separated, or all: {', '.join(LEVERS)}")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="torch.backends.cudnn.benchmark on for the whole process (the cudnn_benchmark lever's child)")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile's backend for the compile lever (default: %(default)s; a dry run's: "
                        "aot_eager, which traces forward and backward through the ops' fake kernels "
                        "without generating code)")
    p.add_argument("--out", type=Path, help="JSON results file (default: bench/results/<date>-throughput-<cpu|gpu>.json)")
    a = p.parse_args(argv)
    amps = [x for x in a.amp.split(",") if x]
    levers = list(LEVERS) if a.levers == "all" else [x for x in a.levers.split(",") if x]
    nets = [x for x in a.variants.split(",") if x]
    for kind, given, known in (("precision", amps, PRECISIONS), ("lever", levers, LEVERS), ("net", nets, NETS)):
        unknown = [x for x in given if x not in known]
        if unknown:
            p.error(f"unknown {kind} {unknown[0]}; choose from {', '.join(known)}")
    torch.backends.cudnn.benchmark = a.cudnn_benchmark
    kind = "gpu" if Placement.parse(a.gpus).a.type == "cuda" else "cpu"
    out = a.out or Path("bench/results") / f"{environment()['date']}-throughput-{kind}.json"
    run(a.config, a.gpus, a.batch, a.steps, a.warmup, amps, levers, a.torchvision, out=out, nets=nets,
        compile_backend=a.compile_backend)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
