"""`twocol prepare SRC DST`: an ImageNet-style tree, or the ILSVRC archives as downloaded ->
stored squares, manifests, mean image, PCA."""
from __future__ import annotations

import sys
from pathlib import Path

from ..data.ilsvrc import SPLIT_CHOICES
from ..data.layout import META, REPORT
from ..data.prepare import prepare

HELP = ("resize an ImageNet-style tree, or the ILSVRC archives as downloaded, to stored squares, with "
        "manifests, mean image and PCA")


def add_arguments(p) -> None:
    p.add_argument("src", metavar="SRC", help="ImageNet-style tree: SRC/train/<class>/*, SRC/val/<class>/* "
                                              "(or a flat SRC/val/ with --val-labels); or a folder holding "
                                              "the ILSVRC-2012 or ILSVRC-2010 archives as image-net.org names "
                                              "them (docs/data.md)")
    p.add_argument("dst", metavar="DST", help="output folder (created; a rerun resumes it)")
    p.add_argument("--size", type=int, default=256, help="side of the stored square images (default: %(default)s)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the stored images (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes (default: the CPUs this process may use: its affinity and cgroup quota)")
    p.add_argument("--val-labels", type=Path, default=None, metavar="FILE",
                   help="labels of a flat SRC/val/: '<file> <wnid>' lines (LOC_val_solution.csv works too) "
                        "or one wnid per line in sorted file order")
    p.add_argument("--val-split", choices=SPLIT_CHOICES, default=None,
                   help="archives only: the ILSVRC split stored as the set's val split (default: val; test for "
                        "ILSVRC-2010, whose test labels were released)")


def run(args) -> int:
    meta = prepare(Path(args.src), Path(args.dst), args.size, args.quality, args.workers, args.val_labels,
                   args.val_split)
    print(f"{args.dst}: {meta['train']} train and {meta['val']} val images of {meta['image_size']}x"
          f"{meta['image_size']}, {meta['classes']} classes")
    if meta["skipped"]:
        print(f"skipped {meta['skipped']} file(s) that are not usable images; see {Path(args.dst) / REPORT}",
              file=sys.stderr)
    for name, a in meta.get("archives", {}).items():
        if a["published"] is None:
            print(f"{name}: MD5 {a['md5']} (no published MD5 to compare with)", file=sys.stderr)
        elif not a["matches"]:
            print(f"twocol: warning: {name} has MD5 {a['md5']}, not the published {a['published']}: a damaged "
                  f"or different download (recorded in {Path(args.dst) / META})", file=sys.stderr)
    return 0
