"""Top-1/top-5 error with the centre crop or the paper's 10-patch test, for one net or an
ensemble (section 4.1 and Table 2: averages of softmax outputs, never of logits)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def predict_proba(nets, images: torch.Tensor) -> torch.Tensor:
    """Softmax averaged over the views of each image and over the nets.

    images: (N, 3, S, S) for one view, or (N, V, 3, S, S) for V views (the 10-patch test)."""
    views = images.shape[1] if images.dim() == 5 else 1
    flat = images.reshape(-1, *images.shape[-3:])
    total = None
    for net in nets:
        p = F.softmax(net(flat).float(), dim=1)
        p = p.view(-1, views, p.shape[1]).mean(1)
        total = p if total is None else total + p.to(total.device)
    return total / len(nets)


def topk_errors(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Numbers of top-1 and top-5 mistakes in a batch, as tensors on the scores' device (so a
    training step need not wait for the GPU to read them)."""
    k = min(5, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    labels = labels.to(top.device).view(-1, 1)
    return (top[:, :1] != labels).all(1).sum(), (top != labels).all(1).sum()


@torch.no_grad()
def evaluate(nets, batches) -> dict:
    """Run `batches` (an iterable of (images, labels)) through the net(s) in eval mode."""
    nets = list(nets)
    modes = [n.training for n in nets]
    for n in nets:
        n.eval()
    wrong1 = wrong5 = seen = 0
    try:
        for images, labels in batches:
            w1, w5 = topk_errors(predict_proba(nets, images), labels)
            wrong1, wrong5, seen = wrong1 + int(w1), wrong5 + int(w5), seen + labels.shape[0]
    finally:
        for n, m in zip(nets, modes):
            n.train(m)
    if seen == 0:
        raise ValueError("evaluation saw no images")
    return {"top1_error": wrong1 / seen, "top5_error": wrong5 / seen, "images": seen}


def add_arguments(p) -> None:
    from .cli import add_config_arguments
    add_config_arguments(p, default_config=None, config_help="YAML config the checkpoints must match "
                                                             "(default: the first checkpoint's own)")
    p.add_argument("--ckpt", action="append", required=True, metavar="PATH",
                   help="a checkpoint; give several for their ensemble (softmax average)")
    p.add_argument("--data", help="prepared dataset (default: the config's built-in synthetic set)")
    p.add_argument("--split", default="val", choices=["val", "train"])
    p.add_argument("--ten-crop", action="store_true",
                   help="the paper's 10-patch test: 4 corners and centre, and their mirrors")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    import json

    from . import sim
    from .checkpoint import load_net
    from .config import load_config
    from .data import make_loader
    from .devices import Placement
    from .train import resolve_data

    placement = Placement.parse(args.gpus)
    cfg = load_config(args.config, args.overrides) if args.config else None
    nets = []
    for path in args.ckpt:
        net, net_cfg, _ = load_net(path, placement, cfg)
        cfg = cfg or net_cfg  # every further checkpoint must match the first one's net
        nets.append(net)
    loader = make_loader(cfg, resolve_data(cfg, args.data), args.split, placement, train=False,
                         ten_crop=args.ten_crop)
    with sim.isolation(args.check_isolation):
        errors = evaluate(nets, loader.epoch(0))
    result = {"checkpoints": args.ckpt, "split": args.split,
              "test": "10-patch" if args.ten_crop else "centre crop", **errors}
    if args.json:
        print(json.dumps(result))
    else:
        what = f"ensemble of {len(nets)}" if len(nets) > 1 else args.ckpt[0]
        print(f"{what}, {result['test']}, {result['images']} {args.split} images: "
              f"top-1 error {100 * result['top1_error']:.2f}%, top-5 error {100 * result['top5_error']:.2f}%")
    return 0
