"""`twocol features`: the last hidden layer (fc7) of every image of a split, for `viz neighbours`."""
from __future__ import annotations

from ..devices import Placement
from ..features import save_features
from .common import add_gpus_argument, add_threads_argument, set_threads

HELP = "save the last hidden layer (fc7) of every image of a split, for viz neighbours"


def add_arguments(p) -> None:
    p.add_argument("--ckpt", required=True, help="a twocol checkpoint (its config is used)")
    p.add_argument("--data", required=True, metavar="DIR", help="a prepared dataset")
    p.add_argument("--split", choices=("train", "val"), default="train", help="default: %(default)s")
    p.add_argument("-o", "--out", required=True, metavar="FEATS", help="writes FEATS.npy and FEATS.json")
    add_gpus_argument(p)
    p.add_argument("--batch-size", type=int, default=None, help="default: the checkpoint config's")
    add_threads_argument(p)


def run(args) -> int:
    set_threads(args.threads)
    npy, meta, shape = save_features(args.ckpt, args.data, args.split, args.out, Placement.parse(args.gpus),
                                     args.batch_size)
    print(f"wrote {npy} ({shape[0]} x {shape[1]} float32) and {meta}")
    return 0
