"""Top-1/top-5 error with the centre crop or the paper's 10-patch test, for one net or an
ensemble (section 4.1 and Table 2: averages of softmax outputs, never of logits)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from . import sim
from .checkpoint import load_net
from .checkpoint_checks import check_same_classes, recorded_classes, resumed_origin
from .config import Config
from .data.loader import make_loader
from .data.synth import dataset_root
from .devices import Placement
from .distributed import World, all_sum
from .inputs import ColumnInputs
from .metrics import topk_errors


@torch.no_grad()
def predict_proba(nets, images: ColumnInputs | torch.Tensor) -> torch.Tensor:
    """Softmax averaged over the views of each image and over the nets.

    images: (N, 3, S, S) for one view, or (N, V, 3, S, S) for V views (the 10-patch test),
    as ColumnInputs (from a loader) or one tensor where the columns share its device."""
    views = images.shape[1] if images.dim() == 5 else 1

    def flatten(t):
        return t.reshape(-1, *t.shape[-3:])

    flat = images.map(flatten) if isinstance(images, ColumnInputs) else flatten(images)
    total = None
    for net in nets:
        p = F.softmax(net(flat).float(), dim=1)
        p = p.view(-1, views, p.shape[1]).mean(1)
        total = p if total is None else total + p.to(total.device)
    return total / len(nets)


@torch.no_grad()
def evaluate(nets, batches, keep: bool = False) -> dict:
    """Run `batches` (an iterable of (images, labels)) through the net(s) in eval mode. A batch
    left empty by bad images (data/bad.py) counts nothing. With `keep`, the result also holds
    every image's averaged softmax ("probs", on the CPU) and its label, in the batches' order,
    so that nets evaluated on the same split can be averaged afterwards."""
    nets = list(nets)
    modes = [n.training for n in nets]
    for n in nets:
        n.eval()
    wrong1 = wrong5 = seen = 0
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        for images, labels in batches:
            if labels.shape[0] == 0:
                continue
            probs = predict_proba(nets, images)
            w1, w5 = topk_errors(probs, labels)
            wrong1, wrong5, seen = wrong1 + int(w1), wrong5 + int(w5), seen + labels.shape[0]
            if keep:
                kept.append((probs.cpu(), labels.cpu()))
    finally:
        for n, m in zip(nets, modes):
            n.train(m)
    if seen == 0:
        raise ValueError("evaluation saw no images")
    result = {"top1_error": wrong1 / seen, "top5_error": wrong5 / seen, "images": seen}
    if keep:
        result["probs"] = torch.cat([p for p, _ in kept])
        result["labels"] = torch.cat([y for _, y in kept])
    return result


def evaluate_sharded(net, loader, world: World) -> dict:
    """Each rank evaluates its shard of the split; the counts are summed over ranks."""
    r = evaluate([net], loader.epoch(0))
    w1, w5, n = all_sum([r["top1_error"] * r["images"], r["top5_error"] * r["images"], r["images"]],
                        net.placement.a, world)
    return {"top1_error": w1 / n, "top5_error": w5 / n, "images": int(n)}


def evaluate_checkpoints(paths: list[str | Path], data: str | Path | None, placement: Placement,
                         cfg: Config | None = None, split: str = "val", ten_crop: bool = False,
                         check_isolation: bool = False, overrides: list[str] = ()) -> dict:
    """The error of one checkpoint, or of the ensemble of several, on a split of the dataset at
    `data` (None: the dataset the first checkpoint's run was trained on, as `train --resume`
    takes it, else the config's built-in synthetic set). Every checkpoint must hold the
    architecture of `cfg` (default: the first checkpoint's own config with `overrides`, which
    also sets the data settings; an override that would change the net is refused)."""
    nets, trained_on = [], []
    for path in paths:
        net, cfg, ckpt = load_net(path, placement, cfg, overrides)
        if not nets and data is None:
            data, _ = resumed_origin(ckpt, path, None, None)
        nets.append(net)
        trained_on.append(recorded_classes(ckpt, path))  # not the whole checkpoint: its weights are in the net
    root = dataset_root(cfg, data)
    loader = make_loader(cfg, root, split, placement, train=False, ten_crop=ten_crop)
    for path, classes in zip(paths, trained_on):
        check_same_classes({"classes": classes}, path, loader.dataset.classes, root)
    with sim.isolation(check_isolation):
        errors = evaluate(nets, loader.epoch(0))
    bad = loader.take_bad()
    return {"checkpoints": [str(p) for p in paths], "split": split,
            "test": "10-patch" if ten_crop else "centre crop", **errors,
            "bad_images": [{"path": b.path, "reason": b.reason} for b in bad]}
