"""`twocol prepare SRC DST`: an ImageNet-style tree -> the stored layout of layout.py (a folder
of the ILSVRC archives as downloaded goes to ilsvrc.py instead).

SRC/train/<class>/<image> gives the classes (sorted folder names) and the training set;
SRC/val/<class>/<image>, or ILSVRC's flat SRC/val/<image> with --val-labels, the validation
set. Every image is resized so that its shorter side is --size and centre-cropped to
--size x --size (the paper's 256x256), then stored as a baseline RGB JPEG. Files that cannot
become such an image are skipped and listed, with the reason, in DST/report.txt.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from ..config import MAX_IMAGE_SIDE
from ..errors import DataError
from .build import Item, build, printable, worker_count
from .decode import load_source
from .ilsvrc import find_release, prepare_archives
from .layout import class_folders, stored_path


def _entries(folder: Path, roots: tuple[Path, ...], problems: list[tuple[Path, str]]) -> tuple[list[Path], list[str]]:
    """The files and the sub-folder names of `folder`, sorted, hidden ones left out. A symbolic
    link is followed only when it resolves inside one of `roots` (the source tree); a link that
    leads outside it, a broken one (a loop, a missing target) and an unreadable entry are
    added to `problems` as (path, reason), with the link's own path: its target is never read
    nor written anywhere."""
    files, dirs = [], []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"cannot list {printable(str(folder))}: {e.strerror or e}") from None
    for e in entries:
        if e.name.startswith("."):
            continue
        path = Path(e.path)
        try:
            if e.is_symlink():
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    problems.append((path, "broken symbolic link (a loop or a missing target)"))
                    continue
                if not any(target.is_relative_to(r) for r in roots):
                    problems.append((path, "symbolic link leading outside the source tree: not followed"))
                    continue
            if e.is_dir():
                dirs.append(e.name)
            elif e.is_file():
                files.append(path)
        except OSError as err:
            problems.append((path, f"unreadable: {err.strerror or err}"))
    return files, dirs


def _class_name_problem(name: str) -> str | None:
    # classes.txt holds one name a line: a line break (any of those str.splitlines knows) would
    # shift every later label, a byte that is not UTF-8 cannot be written in it at all.
    if not name.isprintable():
        return "holds a line break, a control character or a byte that is not UTF-8"
    return None


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
    """Classes, the work per split, and what is skipped before any work (split, path, reason):
    files without a label (flat val folder), links not followed, empty class folders."""
    train_dir, val_dir = src / "train", src / "val"
    if not train_dir.is_dir():
        raise DataError(f"{src} has no train/ folder (expected {src}/train/<class>/<image>, or the ILSVRC "
                        "archives as image-net.org names them: docs/data.md)")
    if not val_dir.is_dir():
        raise DataError(f"{src} has no val/ folder (expected {src}/val/<class>/<image>, or a flat "
                        "val/ folder with --val-labels)")
    roots = tuple({src.resolve(), train_dir.resolve(), val_dir.resolve()})
    problems: dict[str, list[tuple[Path, str]]] = {"train": [], "val": []}
    _, classes = _entries(train_dir, roots, problems["train"])
    for c in classes:
        why = _class_name_problem(c)
        if why:
            raise DataError(f"class folder {printable(str(train_dir / c))} {why}; rename it (class names are "
                            "lines of classes.txt)")
    if len(classes) < 2:
        raise DataError(f"{train_dir} must hold at least 2 class folders, found {len(classes)}")
    folders = class_folders(classes)

    def images(split: str, folder: Path) -> list[Path]:
        found, _ = _entries(folder, roots, problems[split])
        if not found:
            problems[split].append((folder, "empty class folder: no image in it"))
        return found

    labelled: dict[str, list[tuple[Path, int]]] = {
        "train": [(f, i) for i, c in enumerate(classes) for f in images("train", train_dir / c)]}
    flat, val_sub = _entries(val_dir, roots, problems["val"])
    if val_labels is not None:
        labels = read_val_labels(val_labels, classes, flat)
        labelled["val"] = [(f, labels[f]) for f in flat if f in labels]
        problems["val"] += [(f, f"no label in {val_labels}") for f in flat if f not in labels]
    elif val_sub:
        unknown = [d for d in val_sub if d not in folders]
        if unknown:
            raise DataError(f"{printable(str(val_dir / unknown[0]))} is not a class of {train_dir}")
        index = {c: i for i, c in enumerate(classes)}
        labelled["val"] = [(f, index[c]) for c in val_sub for f in images("val", val_dir / c)]
    elif flat:
        raise DataError(f"{val_dir} holds images but no class folders: give their labels with --val-labels FILE")
    else:
        raise DataError(f"{val_dir} is empty")
    work: dict[str, list[Item]] = {}
    for split, pairs in labelled.items():
        taken: set[str] = set()
        work[split] = [Item(str(path.resolve()), stored_path(split, folders[classes[label]], path.name, taken), label)
                       for path, label in pairs]
    skipped = [(split, os.path.abspath(p), why) for split, found in problems.items() for p, why in found]
    return classes, work, skipped


def refuse_overlap(src: Path, dst: Path) -> None:
    """A destination inside the source tree would become part of it (a new class folder of
    SRC/train, say, or a rerun reading its own output); a source inside the destination would
    be written over. Compared with symbolic links resolved, SRC/train and SRC/val included
    (each may lead elsewhere, as scan allows)."""
    out = dst.resolve()
    for name, folder in (("", src), ("train", src / "train"), ("val", src / "val")):
        tree = folder.resolve()
        where = f"{src}" + (f" (its {name}/ folder, {tree})" if name else "")
        if out == tree or out.is_relative_to(tree):
            raise DataError(f"destination {dst} is {'the' if out == tree else 'inside the'} source {where}; "
                            "give a folder outside the source")
        if tree.is_relative_to(out):
            raise DataError(f"source {where} is inside the destination {dst}; give a folder outside the source")


def prepare(src: Path, dst: Path, size: int = 256, quality: int = 90, workers: int | None = None,
            val_labels: Path | None = None, val_split: str | None = None) -> dict:
    """Prepare `src` (a tree, or a folder of ILSVRC archives: ilsvrc.py) into `dst`; returns the
    dataset's meta (counts, skipped files). `val_split` (archives only): the ILSVRC split that
    becomes the set's val split, val (the default) or test."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DataError(f"source {src} is not a folder")
    if size < 1:
        raise DataError(f"--size must be positive, got {size}")
    if not 1 <= quality <= 100:
        raise DataError(f"--quality must be in 1..100, got {quality}")
    if size > MAX_IMAGE_SIDE:
        raise DataError(f"--size must be at most {MAX_IMAGE_SIDE}, got {size}")
    release = None if (src / "train").is_dir() else find_release(src)
    if release is not None:
        if val_labels is not None:
            raise DataError(f"--val-labels is for an extracted tree: the labels of the {release.title} archives "
                            "come from their devkit")
        return prepare_archives(src, dst, release, size=size, quality=quality, workers=workers,
                                split=val_split or "val")
    if val_split is not None:
        raise DataError(f"--val-split is for a folder of ILSVRC archives; {src} is not one")
    workers = worker_count(workers)
    refuse_overlap(src, dst)
    classes, work, skipped = scan(src, val_labels)
    params = {"kind": "prepared", "source": str(src.resolve()), "image_size": size, "quality": quality}
    return build(dst, params=params, classes=classes, work=work, produce=functools.partial(load_source, size=size),
                 size=size, quality=quality, workers=workers, label="prepare",
                 skipped=skipped)
