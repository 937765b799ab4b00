"""Profile training steps (`twocol profile`): a Chrome/Perfetto trace of a few steps of a
config's net on random tensors, what each column and link did in them (timeline.py), and
the two-device cost model fed with those times (costmodel.py).

The steps are the training loop's (step.train_step): forward under the config's autocast,
cross entropy, backward, the paper's update. Each column's weights get an optimiser of their own so
that their updates can be told apart in the trace (the update is per tensor, so this computes
what one optimiser would). Layer ranges are recorded by forward hooks around each layer's
modules (conv1 = conv1, norm1, pool1; ...; fc6 = fc6 and its ReLU and dropout), only while
the profiler runs.
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile

from . import costmodel
from .config import Config
from .devices import Placement
from .links import profiled
from .model import build_model
from .optim import make_optimizer
from .provenance import commit_fields
from .step import train_step
from .timeline import LAYER_LABEL, STEP_LABEL, UPDATE_LABEL, read_trace, step_timelines, summarize

def label_layers(net: nn.Module) -> list:
    """Forward hooks that record each layer of each column (and fc8 on column A) as a
    profiler range "twocol:layer:<column>:<layer>"; returns the hook handles."""
    handles, open_ranges = [], {}

    def enter(name):
        def hook(_module, _inputs):
            r = profiled(name)
            r.__enter__()
            open_ranges[name] = r
        return hook

    def leave(name):
        def hook(_module, _inputs, _output):
            r = open_ranges.pop(name, None)
            if r is not None:
                r.__exit__(None, None, None)
        return hook

    # Each layer as the paper counts it, from its first module to its last (the plan's).
    spans = [(column, layer.name, getattr(col, layer.modules[0]), getattr(col, layer.modules[-1]))
             for column, col in net.columns() for layer in net.plan.column_layers]
    spans.append(("A", "fc8", net.fc8, net.fc8))
    for column, layer, first, last in spans:
        name = f"{LAYER_LABEL}{column}:{layer}"
        handles.append(first.register_forward_pre_hook(enter(name)))
        handles.append(last.register_forward_hook(leave(name)))
    return handles


def column_optimizers(net: nn.Module, cfg: Config) -> dict:
    """One optimiser per column (fc8 goes with column A, where it lives)."""
    parts = {name: [col] for name, col in net.columns()}
    parts["A"].append(net.fc8)
    return {name: make_optimizer(nn.ModuleList(mods), cfg.optim) for name, mods in parts.items()}


def profile_training(cfg: Config, placement: Placement, out_dir: Path, *, steps: int = 3, warmup: int = 2,
                     streams: bool = True, seed: int = 0) -> dict:
    """Run `warmup` steps, then `steps` timed steps without the profiler, then `steps` steps
    under it; write out_dir/trace.json.gz and return what was measured."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got {steps}, {warmup}")
    out_dir.mkdir(parents=True, exist_ok=True)
    net = build_model(cfg, placement, seed=seed)
    cuda = placement.a.type == "cuda"
    net.use_streams(streams and cuda)
    opts = column_optimizers(net, cfg)
    gen = torch.Generator().manual_seed(seed)
    side, batch = cfg.model.input_size, cfg.data.batch_size
    x = torch.randn(batch, 3, side, side, generator=gen).to(placement.a)
    y = torch.randint(0, cfg.model.num_classes, (batch,), generator=gen).to(placement.a)
    devices = sorted({placement.a, placement.b}, key=str)

    def sync():
        if cuda:
            for d in devices:
                torch.cuda.synchronize(d)

    def mark(part: str):
        """The step's loss and each column's update as the profiler ranges timeline.py reads."""
        return profiled(f"{LAYER_LABEL}A:loss" if part == "loss" else UPDATE_LABEL + part.split(":", 1)[1])

    def step() -> float:
        t = time.perf_counter()
        with profiled(STEP_LABEL):
            train_step(net, opts, x, y, cfg.train.amp, placement.a, mark=mark)
            sync()
        return time.perf_counter() - t

    load_start = os.getloadavg()
    net.train()
    hooks = label_layers(net)
    try:
        for _ in range(warmup):
            step()
        plain = [step() for _ in range(steps)]
        net.reset_link_bytes()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            profiled_s = [step() for _ in range(steps)]
        routes = {name: {r: b // steps for r, b in link.bytes_by_route.items()} for name, link in net.links.items()}
    finally:
        for h in hooks:
            h.remove()
    trace = out_dir / "trace.json.gz"
    prof.export_chrome_trace(str(trace))
    params = {name: sum(p.numel() for g in o.param_groups for p in g["params"]) for name, o in opts.items()}
    return {**commit_fields(),
            "config": cfg.name, "arch": cfg.model.arch, "placement": str(placement), "device": str(placement.a),
            "gpu": torch.cuda.get_device_name(placement.a) if cuda else None,
            "amp": cfg.train.amp, "column_streams": bool(streams and cuda), "batch": batch,
            "input": [3, side, side], "warmup": warmup, "steps": steps,
            "step_s": plain, "median_step_s": statistics.median(plain), "profiled_step_s": profiled_s,
            "link_bytes_per_step": routes, "input_bytes": x.numel() * x.element_size(),
            "params": params, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_average": [load_start[0], os.getloadavg()[0]], "trace": trace.name}


def layer_times(summary: dict) -> tuple[dict, dict]:
    """From timeline.summarize: {column: {layer: (forward s, backward s)}} and {column: update s}
    for the cost model; the column work it cannot place (none, normally) is left out."""
    layers, updates = {}, {}
    for column in ("A", "B"):
        per = summary["layers"].get(column, {})
        names = [l for l in costmodel.FORWARD_ORDER if l in per]
        if names:
            layers[column] = {l: (per[l]["forward"] * 1e-6, per[l]["backward"] * 1e-6) for l in names}
            updates[column] = per.get("update", {}).get("update", 0.0) * 1e-6
    return layers, updates


def analyse(run: dict, out_dir: Path, gbps: list[tuple[str, float]]) -> tuple[dict, list]:
    """The run with the timeline of its profiled steps and, for a two-column net, the cost
    model's table; and the steps themselves (timeline.Step), for the chart."""
    steps = step_timelines(read_trace(out_dir / run["trace"]))
    summary = summarize(steps)
    result = {**run, "timeline": summary}
    if run["arch"] == "twocol":
        layers, updates = layer_times(summary)
        result["cost_model"] = costmodel.predictions(
            layers, updates, run["link_bytes_per_step"], gbps, run["median_step_s"],
            input_bytes_to_b=run["input_bytes"], profiled_step=summary["wall_us"] * 1e-6)
    return result, steps
