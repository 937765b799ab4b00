"""`twocol eval`: top-1/top-5 error of checkpoints, centre crop or 10-patch, alone or as an ensemble."""
from __future__ import annotations

import json

from ..devices import Placement
from ..evaluate import evaluate_checkpoints
from .common import add_config_arguments, add_threads_argument, config_of, set_threads

HELP = "top-1/top-5 error of checkpoints, centre crop or 10-patch, alone or as an ensemble"


def add_arguments(p) -> None:
    add_config_arguments(p, default_config=None, config_help="YAML config the checkpoints must match "
                                                             "(default: the first checkpoint's own)")
    p.add_argument("--ckpt", action="append", required=True, metavar="PATH",
                   help="a checkpoint; give several for their ensemble (softmax average)")
    p.add_argument("--data", help="prepared dataset (default: the one the first checkpoint's run was trained on, "
                                  "else the config's built-in synthetic set)")
    p.add_argument("--split", default="val", choices=["val", "train"])
    p.add_argument("--ten-crop", action="store_true",
                   help="the paper's 10-patch test: 4 corners and centre, and their mirrors")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_threads_argument(p)


def run(args) -> int:
    set_threads(args.threads)
    # No config: the first checkpoint's own, with the overrides (those that would change its net are refused).
    cfg = config_of(args) if args.config or args.ablation else None
    result = evaluate_checkpoints(args.ckpt, args.data, Placement.parse(args.gpus), cfg, args.split,
                                  args.ten_crop, args.check_isolation, overrides=args.overrides if cfg is None else ())
    if args.json:
        print(json.dumps(result))
    else:
        what = f"ensemble of {len(args.ckpt)}" if len(args.ckpt) > 1 else args.ckpt[0]
        print(f"{what}, {result['test']}, {result['images']} {args.split} images: "
              f"top-1 error {100 * result['top1_error']:.2f}%, top-5 error {100 * result['top5_error']:.2f}%")
        if result["bad_images"]:
            first = result["bad_images"][0]
            print(f"skipped {len(result['bad_images'])} bad image(s), e.g. {first['path']}: {first['reason']}")
    return 0
