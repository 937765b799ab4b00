"""`twocol features`: the last hidden layer (fc7; 4096-d for the full net) of every image of
a split, the feature space of the paper's section 6.1 and Figure 4.

A features file FEATS is two files side by side:
  FEATS.npy   float32, N x D, row i = image i of the split in manifest order
  FEATS.json  root, split, relpaths and labels in row order, classes, the checkpoint it came
              from, the config name and the crop side (what `viz neighbours` needs)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_write
from .checkpoint import load_net
from .checkpoint_checks import check_same_classes
from .data.loader import make_loader
from .devices import Placement
from .errors import DataError
from .netsize import check_size

FORMAT = 1


def feature_paths(feats: str | Path) -> tuple[Path, Path]:
    """FEATS, FEATS.npy or FEATS.json -> (FEATS.npy, FEATS.json)."""
    p = Path(feats)
    stem = p.with_suffix("") if p.suffix in (".npy", ".json") else p
    return stem.with_name(stem.name + ".npy"), stem.with_name(stem.name + ".json")


def load_features(feats: str | Path) -> tuple[np.ndarray, dict]:
    """(rows, metadata); rows are memory-mapped, so a large split is not read in at once."""
    npy, meta_path = feature_paths(feats)
    for p in (npy, meta_path):
        if not p.is_file():
            raise DataError(f"features file not found: {p} (make it with `twocol features`)")
    try:
        meta = json.loads(meta_path.read_text())
        rows = np.load(npy, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise DataError(f"{npy.with_suffix('')} is not a twocol features file ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{meta_path} is not a twocol features file (format {FORMAT})")
    if rows.ndim != 2 or rows.shape[0] != len(meta["relpaths"]) or len(meta["relpaths"]) != len(meta["labels"]):
        raise DataError(f"{npy} has shape {rows.shape} but {meta_path} lists {len(meta['relpaths'])} images")
    return rows, meta


@torch.no_grad()
def extract(net, batches, out: np.ndarray) -> list[int]:
    """Write net.last_hidden of every batch into consecutive rows of `out` (eval mode: no
    dropout masks, so the same image always gives the same row; under the paper's convention
    the rows are fc7's outputs times the keep probability). Returns the labels seen."""
    was_training = net.training
    net.eval()
    labels, row = [], 0
    try:
        for images, batch_labels in batches:
            if batch_labels.shape[0] == 0:
                continue
            h = net.last_hidden(images).float().cpu().numpy()
            if row + len(h) > len(out):
                raise DataError(f"the loader delivered more than the split's {len(out)} images")
            out[row:row + len(h)] = h
            row += len(h)
            labels += batch_labels.tolist()
    finally:
        net.train(was_training)
    if row != len(out):
        raise DataError(f"the loader delivered {row} images, the split has {len(out)}")
    return labels


def save_features(ckpt: str | Path, data_root: str | Path, split: str, out: str | Path, placement: Placement,
                  batch_size: int | None = None) -> tuple[Path, Path, tuple[int, int]]:
    """Write the features file `out` (FEATS.npy + FEATS.json) of every image of `split`;
    returns the two paths and the rows' shape."""
    if batch_size is not None and batch_size < 1:
        raise DataError(f"the batch size must be positive, got {batch_size}")
    net, cfg, saved = load_net(ckpt, placement)
    if batch_size is not None:
        cfg.data.batch_size = batch_size
        check_size(cfg, placement)
    loader = make_loader(cfg, Path(data_root), split, placement, train=False)
    check_same_classes(saved, ckpt, loader.dataset.classes, data_root)
    manifest = loader.dataset.split(split)
    npy, meta_path = feature_paths(out)
    npy.parent.mkdir(parents=True, exist_ok=True)
    # The .json is written last: a run that dies while writing rows leaves no pair that loads.
    meta_path.unlink(missing_ok=True)
    rows = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32,
                                     shape=(len(manifest), net.fc8.in_features))
    try:
        labels = extract(net, loader.epoch(0), rows)
    except DataError:
        bad = loader.take_bad()
        if bad:  # they left rows empty
            raise DataError(f"{len(bad)} image(s) of the {split} split are bad, e.g. {bad[0].path}: "
                            f"{bad[0].reason}; a features file needs every image") from None
        raise
    rows.flush()
    expected = [int(label) for _, label in manifest]
    if labels != expected:
        raise DataError(f"the {split} loader's labels are not in manifest order; "
                        "the rows of FEATS could not be matched to images")
    meta = {"format": FORMAT, "root": str(Path(data_root).resolve()), "split": split,
            "checkpoint": str(Path(ckpt).resolve()), "epoch": saved.get("epoch"),
            "step": saved.get("step"), "config": cfg.name, "crop": cfg.model.input_size,
            "classes": list(loader.dataset.classes), "relpaths": [str(p) for p, _ in manifest],
            "labels": expected}
    atomic_write(meta_path, json.dumps(meta))
    return npy, meta_path, rows.shape
