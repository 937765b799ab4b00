"""`twocol prepare SRC DST`: an ImageNet-style tree -> the stored layout of layout.py.

SRC/train/<class>/<image> gives the classes (sorted folder names) and the training set;
SRC/val/<class>/<image>, or ILSVRC's flat SRC/val/<image> with --val-labels, the validation
set. Every image is resized so that its shorter side is --size and centre-cropped to
--size x --size (the paper's 256x256), then stored as a baseline RGB JPEG. Files that cannot
become such an image are skipped and listed, with the reason, in DST/report.txt.
"""
from __future__ import annotations

import functools
import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError
from .build import BadImage, Item, build


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. 16-bit greyscale (some PNGs) is scaled down rather than
    clipped; CMYK (Adobe's inverted kind included) and palette images go through Pillow."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I"):
        arr = np.asarray(im).astype(np.float64)
        if arr.max() > 255:
            arr = arr / 257.0
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")


def load_source(path: str, size: int) -> np.ndarray:
    """A source image, upright (EXIF orientation applied), shorter side resized to `size` and
    centre-cropped: (size, size, 3) uint8. Raises BadImage with the reason otherwise."""
    try:
        if os.path.getsize(path) == 0:
            raise BadImage("empty file")
    except OSError as e:
        raise BadImage(f"unreadable: {e.strerror or e}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on odd EXIF and palettes; the image is fine
            with Image.open(path) as im:
                # A large JPEG decodes straight at 1/2, 1/4 or 1/8 scale, never below `size`.
                im.draft("RGB", (size, size))
                im.load()
                im = to_rgb(ImageOps.exif_transpose(im))
        w, h = im.size
        side = min(w, h)
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        return np.asarray(im.resize((size, size), Image.Resampling.BICUBIC, box=box))
    except UnidentifiedImageError:
        raise BadImage("not an image (no known image format)") from None
    except Image.DecompressionBombError as e:
        raise BadImage(f"too large: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        raise BadImage(("truncated: " if "truncat" in msg else "cannot decode: ") + msg) from None


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def _safe(name: str) -> str:
    """File and folder names DALI's file lists and any shell take as they are."""
    return _UNSAFE.sub("_", name) or "_"


def _files(folder: Path) -> list[Path]:
    return sorted(Path(e.path) for e in os.scandir(folder) if e.is_file() and not e.name.startswith("."))


def _subdirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def read_val_labels(path: Path, classes: list[str], files: list[Path]) -> dict[Path, int]:
    """Labels of ILSVRC's flat val folder. Accepted: lines '<file> <class>' (or comma-separated,
    as in Kaggle's LOC_val_solution.csv, whose second field starts with the class), the file
    named with or without its extension; or one class per line, in the order of the sorted
    file names. Classes are folder names of SRC/train (the wnids)."""
    index = {c: i for i, c in enumerate(classes)}
    try:
        lines = [l.replace(",", " ").split() for l in Path(path).read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read val labels {path}: {e}") from None
    rows = [(n, t) for n, t in enumerate(lines, 1) if t]
    names = {n for f in files for n in (f.name, f.stem)}
    if rows and len(rows[0][1]) >= 2 and rows[0][1][0] not in names:
        rows = rows[1:]  # a header line
    if not rows:
        raise DataError(f"val labels {path} is empty")

    def label(n: int, token: str) -> int:
        if token not in index:
            hint = (" (integer labels need the devkit's synset map; give '<file> <wnid>' lines instead)"
                    if token.isdigit() else "")
            raise DataError(f"val labels {path} line {n}: '{token}' is not a class of SRC/train{hint}")
        return index[token]

    if all(len(t) == 1 for _, t in rows):
        if len(rows) != len(files):
            raise DataError(f"val labels {path} has {len(rows)} one-class lines for {len(files)} files in SRC/val")
        return {f: label(n, t[0]) for f, (n, t) in zip(files, rows)}
    if any(len(t) == 1 for _, t in rows):
        raise DataError(f"val labels {path} mixes '<file> <class>' lines with one-class lines")
    by_name = {}
    for n, t in rows:
        by_name[t[0]] = label(n, t[1])
    return {f: by_name[key] for f in files for key in (f.name, f.stem) if key in by_name}


def scan(src: Path, val_labels: Path | None) -> tuple[list[str], dict[str, list[Item]], list[tuple[str, str, str]]]:
    """Classes, the work per split, and files that have no label (flat val folder)."""
    train_dir, val_dir = src / "train", src / "val"
    if not train_dir.is_dir():
        raise DataError(f"{src} has no train/ folder (expected {src}/train/<class>/<image>)")
    classes = _subdirs(train_dir)
    if len(classes) < 2:
        raise DataError(f"{train_dir} must hold at least 2 class folders, found {len(classes)}")
    if not val_dir.is_dir():
        raise DataError(f"{src} has no val/ folder (expected {src}/val/<class>/<image>, or a flat "
                        "val/ folder with --val-labels)")
    folders, used = {}, set()
    for i, c in enumerate(classes):
        f = _safe(c)
        folders[c] = f if f not in used else f"{f}-{i}"
        used.add(folders[c])
    labelled: dict[str, list[tuple[Path, int]]] = {
        "train": [(f, i) for i, c in enumerate(classes) for f in _files(train_dir / c)]}
    unlabelled = []
    val_sub = _subdirs(val_dir)
    if val_labels is not None:
        flat = _files(val_dir)
        labels = read_val_labels(val_labels, classes, flat)
        labelled["val"] = [(f, labels[f]) for f in flat if f in labels]
        unlabelled = [("val", str(f), f"no label in {val_labels}") for f in flat if f not in labels]
    elif val_sub:
        unknown = [d for d in val_sub if d not in folders]
        if unknown:
            raise DataError(f"{val_dir}/{unknown[0]} is not a class of {train_dir}")
        index = {c: i for i, c in enumerate(classes)}
        labelled["val"] = [(f, index[c]) for c in val_sub for f in _files(val_dir / c)]
    elif _files(val_dir):
        raise DataError(f"{val_dir} holds images but no class folders: give their labels with --val-labels FILE")
    else:
        raise DataError(f"{val_dir} is empty")
    work: dict[str, list[Item]] = {}
    for split, pairs in labelled.items():
        items, taken = [], set()
        for path, label in pairs:
            rel = f"{split}/{folders[classes[label]]}/{_safe(path.stem)}.jpg"
            base, n = rel[:-4], 1
            while rel in taken:  # e.g. a.JPEG and a.png in one folder
                rel, n = f"{base}-{n}.jpg", n + 1
            taken.add(rel)
            items.append(Item(str(path.resolve()), rel, label))
        work[split] = items
    return classes, work, unlabelled


def prepare(src: Path, dst: Path, size: int = 256, quality: int = 90, workers: int | None = None,
            val_labels: Path | None = None) -> dict:
    """Prepare `src` into `dst`; returns the dataset's meta (counts, skipped files)."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DataError(f"source {src} is not a folder")
    if size < 1:
        raise DataError(f"--size must be positive, got {size}")
    if not 1 <= quality <= 100:
        raise DataError(f"--quality must be in 1..100, got {quality}")
    classes, work, unlabelled = scan(src, val_labels)
    params = {"kind": "prepared", "source": str(src.resolve()), "image_size": size, "quality": quality}
    return build(dst, params=params, classes=classes, work=work, produce=functools.partial(load_source, size=size),
                 size=size, quality=quality, workers=workers or os.cpu_count() or 1, label="prepare",
                 skipped=unlabelled)
