"""What a config's net is: every layer with its column, device, output shape and parameters,
the links with the bytes they move per image, and the bytes the data pipeline moves to feed
each column's device per image (`twocol describe` prints it)."""
from __future__ import annotations

import torch

from . import sim
from .config import Config
from .data.feed import feed_bytes_per_image
from .devices import Placement
from .inputs import ColumnInputs
from .model import build_model, count_parameters


def _shown(module: str) -> bool:
    """The modules whose output a description lists: convs, pools and fc layers."""
    return module.startswith(("conv", "pool", "fc"))


def describe(cfg: Config, placement: Placement) -> dict:
    """Run one image through the net and record each layer's output shape and parameters."""
    net = build_model(cfg, placement, seed=0).eval()
    rows, hooks = [], []

    def record(name, column, module):
        def hook(_mod, _inp, out):
            rows.append({"layer": name, "column": column, "device": str(out.device),
                         "output": list(out.shape[1:]),
                         "params": sum(p.numel() for p in module.parameters())})
        return hook

    shown = [m for layer in net.plan.column_layers for m in layer.modules if _shown(m)] + ["fc8"]
    for column, col in net.columns():
        for name in shown[:-1]:
            mod = getattr(col, name)
            hooks.append(mod.register_forward_hook(record(name, column, mod)))
    hooks.append(net.fc8.register_forward_hook(record("fc8", "A", net.fc8)))
    side = cfg.model.input_size
    with torch.no_grad(), sim.ColumnIsolation():
        net(ColumnInputs.copied(torch.zeros(1, 3, side, side), placement))
    for h in hooks:
        h.remove()
    order = {n: i for i, n in enumerate(shown)}
    rows.sort(key=lambda r: (order[r["layer"]], r["column"]))
    links = [{"link": n, "bytes_per_image": b["forward"]} for n, b in net.link_bytes().items()]
    # Decoding on a GPU (DALI's mixed decoder) is only possible with column A on one.
    decodes = ["host", "gpu"] if placement.a.type == "cuda" else ["host"]
    per_decode = {d: feed_bytes_per_image(cfg, placement, d) for d in decodes}
    columns = [c for c, _ in net.columns()] if cfg.model.arch == "twocol" else ["A"]
    feed = [{"column": c, "device": str(placement.a if c == "A" else placement.b),
             **{f"{d}_decode_bytes_per_image": per_decode[d][c] for d in decodes}} for c in columns]
    return {"config": cfg.name, "arch": cfg.model.arch, "placement": str(placement),
            "input": [3, side, side], "layers": rows, "links": links,
            "total_params": count_parameters(net),
            "link_bytes_per_image": sum(l["bytes_per_image"] for l in links), "feed": feed}
