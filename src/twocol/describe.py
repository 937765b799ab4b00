"""`twocol describe`: the net as a table, one row per layer, then the links and totals."""
from __future__ import annotations

import json

import torch

from . import sim
from .config import load_config
from .devices import Placement
from .model import build_model, count_parameters

LAYERS = ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7")


def add_arguments(p) -> None:
    from .cli import add_config_arguments
    add_config_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def describe(cfg, placement: Placement) -> dict:
    """Run one image through the net and record each layer's output shape and parameters."""
    net = build_model(cfg, placement, seed=0).eval()
    rows, hooks = [], []

    def record(name, column, module):
        def hook(_mod, _inp, out):
            rows.append({"layer": name, "column": column, "device": str(out.device),
                         "output": list(out.shape[1:]),
                         "params": sum(p.numel() for p in module.parameters())})
        return hook

    for column, col in net.columns():
        for name in LAYERS:
            mod = getattr(col, name)
            hooks.append(mod.register_forward_hook(record(name, column, mod)))
    hooks.append(net.fc8.register_forward_hook(record("fc8", "A", net.fc8)))
    side = cfg.model.input_size
    with torch.no_grad(), sim.ColumnIsolation():
        net(torch.zeros(1, 3, side, side, device=placement.a))
    for h in hooks:
        h.remove()
    order = {n: i for i, n in enumerate(LAYERS + ("fc8",))}
    rows.sort(key=lambda r: (order[r["layer"]], r["column"]))
    links = [{"link": n, "bytes_per_image": b["forward"]} for n, b in net.link_bytes().items()]
    return {"config": cfg.name, "arch": cfg.model.arch, "placement": str(placement),
            "input": [3, side, side], "layers": rows, "links": links,
            "total_params": count_parameters(net),
            "link_bytes_per_image": sum(l["bytes_per_image"] for l in links)}


def format_tables(d: dict) -> str:
    out = [f"{d['config']} ({d['arch']}): input {'x'.join(map(str, d['input']))}, {d['placement']}", ""]
    out.append(f"{'layer':<7}{'column':<8}{'device':<9}{'output':<16}{'params':>12}")
    for r in d["layers"]:
        out.append(f"{r['layer']:<7}{r['column']:<8}{r['device']:<9}{'x'.join(map(str, r['output'])):<16}{r['params']:>12,}")
    if d["links"]:
        out += ["", f"{'link':<7}{'bytes/image (forward; backward moves the same)':>48}"]
        for l in d["links"]:
            out.append(f"{l['link']:<7}{l['bytes_per_image']:>48,}")
    out += ["", f"total parameters: {d['total_params']:,}"]
    if d["links"]:
        out.append(f"total bytes across links per image, forward: {d['link_bytes_per_image']:,}")
    return "\n".join(out)


def run(args) -> int:
    cfg = load_config(args.config, args.overrides)
    d = describe(cfg, Placement.parse(args.gpus))
    print(json.dumps(d, indent=2) if args.json else format_tables(d))
    return 0
