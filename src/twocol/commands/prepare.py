"""`twocol prepare SRC DST`: an ImageNet-style tree -> stored squares, manifests, mean image, PCA."""
from __future__ import annotations

import sys
from pathlib import Path

from ..data.layout import REPORT
from ..data.prepare import prepare

HELP = "resize an ImageNet-style tree to stored squares, with manifests, mean image and PCA"


def add_arguments(p) -> None:
    p.add_argument("src", metavar="SRC", help="ImageNet-style tree: SRC/train/<class>/*, SRC/val/<class>/* "
                                              "(or a flat SRC/val/ with --val-labels)")
    p.add_argument("dst", metavar="DST", help="output folder (created; a rerun resumes it)")
    p.add_argument("--size", type=int, default=256, help="side of the stored square images (default: %(default)s)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the stored images (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes (default: the CPUs this process may use: its affinity and cgroup quota)")
    p.add_argument("--val-labels", type=Path, default=None, metavar="FILE",
                   help="labels of a flat SRC/val/: '<file> <wnid>' lines (LOC_val_solution.csv works too) "
                        "or one wnid per line in sorted file order")


def run(args) -> int:
    meta = prepare(Path(args.src), Path(args.dst), args.size, args.quality, args.workers, args.val_labels)
    print(f"{args.dst}: {meta['train']} train and {meta['val']} val images of {meta['image_size']}x"
          f"{meta['image_size']}, {meta['classes']} classes")
    if meta["skipped"]:
        print(f"skipped {meta['skipped']} file(s) that are not usable images; see {Path(args.dst) / REPORT}",
              file=sys.stderr)
    return 0
