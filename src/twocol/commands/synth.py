"""`twocol synth DST`: the built-in synthetic dataset (shapes x textures), in prepare's layout."""
from __future__ import annotations

from pathlib import Path

from ..data.layout import open_dataset
from ..data.synth import MAX_CLASSES, synthesize

HELP = "write the built-in synthetic dataset (shapes x textures) in prepare's layout"


def add_arguments(p) -> None:
    p.add_argument("dst", metavar="DST", help="output folder (created; a rerun resumes it)")
    p.add_argument("--classes", type=int, required=True, help=f"number of classes (2..{MAX_CLASSES})")
    p.add_argument("--per-class", type=int, required=True, help="training images per class")
    p.add_argument("--val-per-class", type=int, default=None, help="validation images per class (default: per-class / 5)")
    p.add_argument("--seed", type=int, default=0, help="the set is a function of the seed (default: %(default)s)")
    p.add_argument("--size", type=int, default=72, help="side of the square images (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes (default: the CPUs this process may use: its affinity and cgroup quota)")


def run(args) -> int:
    dst = synthesize(Path(args.dst), args.classes, args.per_class, seed=args.seed, image_size=args.size,
                     val_per_class=args.val_per_class, workers=args.workers)
    meta = open_dataset(dst).meta
    print(f"{dst}: {meta['train']} train and {meta['val']} val images of {meta['image_size']}x"
          f"{meta['image_size']}, {meta['classes']} classes")
    return 0
