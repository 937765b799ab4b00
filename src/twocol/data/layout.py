"""The on-disk layout that `twocol prepare` and `twocol synth` write and every loader reads.

    DST/meta.json             written last: its presence marks the set complete
    DST/classes.txt           one class name per line; line i is label i
    DST/train.txt, val.txt    manifests: "<relative path> <label>" per line (DALI's file_list format)
    DST/stats.npz             mean (S,S,3) float32: per-pixel mean of the stored training images;
                              cov (3,3) float64: their RGB covariance, 0..255 units;
                              eigvals (3,) descending and eigvecs (3,3), one eigenvector per column
    DST/report.txt            the source files that were skipped, with the reason
    DST/checksums.txt         "<relative path> <bytes> <CRC-32, 8 hex digits>" per stored image,
                              what the loaders check the files against at start (data/bad.py);
                              sets made before it existed lack it: rerunning the same prepare
                              or synth command adds it
    DST/verified.txt          "<relative path> <bytes> <mtime_ns> <ctime_ns> <CRC-32>" per image whose
                              CRC was last found equal to checksums.txt's: the start-up check
                              reads only the files that changed since (a cache, rewritten by it)
    DST/train/<class>/*.jpg, DST/val/<class>/*.jpg   the images, S x S RGB baseline JPEG
    DST/.partial/             work state while a run is unfinished (removed when it completes)
"""
from __future__ import annotations

import json
import os
import re
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np

from ..atomic import atomic_write
from ..errors import DataError

FORMAT = 1
SPLITS = ("train", "val")
META, CLASSES, STATS, REPORT, PARTIAL = "meta.json", "classes.txt", "stats.npz", "report.txt", ".partial"
CHECKSUMS = "checksums.txt"
VERIFIED = "verified.txt"


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def safe_name(name: str) -> str:
    """File and folder names DALI's file lists and any shell take as they are."""
    return _UNSAFE.sub("_", name) or "_"


def class_folders(classes: list[str]) -> dict[str, str]:
    """Class name -> its folder under train/ and val/: the safe name, made unique by the class's
    index where two names become the same."""
    folders, used = {}, set()
    for i, c in enumerate(classes):
        f = safe_name(c)
        folders[c] = f if f not in used else f"{f}-{i}"
        used.add(folders[c])
    return folders


def stored_path(split: str, folder: str, source_name: str, taken: set[str]) -> str:
    """The relative path of the stored image made from the source file `source_name` (a file
    name, without folders): <split>/<folder>/<safe stem>.jpg, with -1, -2, ... added where
    another source of the split took that path (a.JPEG and a.png of one class). Adds it to
    `taken`."""
    rel = f"{split}/{folder}/{safe_name(PurePosixPath(source_name).stem)}.jpg"
    base, n = rel[:-4], 1
    while rel in taken:
        rel, n = f"{base}-{n}.jpg", n + 1
    taken.add(rel)
    return rel


# What a dataset's own files may hold, from the counts in meta.json: a file past its bound is
# refused before it is read, so that a huge one costs neither memory nor time.
NAME_BYTES = 255                  # the longest name of a file or folder (NAME_MAX)
REL_BYTES = 3 * (NAME_BYTES + 1)  # "<split>/<class>/<file>", the path of a stored image
LINE_NUMBERS = 80                 # the numbers after the path on a line of a manifest, checksums.txt, verified.txt
META_BYTES = 1 << 20


def write_manifest(path: Path, items: list[tuple[str, int]]) -> None:
    atomic_write(path, "".join(f"{rel} {label}\n" for rel, label in items))


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "of an unknown kind"


def open_regular(path: Path, limit: int, bound: str) -> BinaryIO | None:
    """`path` open for reading (None when nothing is there), if it is a regular file, or a link
    to one, of at most `limit` bytes (`bound`: what sets that limit, for the message). Anything
    else is a DataError saying what it is, and is not read: a FIFO would block the start,
    /dev/zero never end a read."""
    if not os.path.lexists(path):
        return None
    shown = f"{path} (a link to {os.path.realpath(path)})" if os.path.islink(path) else str(path)

    def check(st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"{shown} is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise DataError(f"{shown} is {st.st_size:,} bytes, more than {bound} ({limit:,})")

    try:
        check(os.stat(path))  # before opening it: opening a device can do something
        f = open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb")  # (a FIFO put there since: no wait)
        try:
            check(os.fstat(f.fileno()))
        except DataError:
            f.close()
            raise
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    return f


def read_text(path: Path, limit: int, bound: str) -> str | None:
    """A text file of the layout, read as `open_regular` allows (None when nothing is there);
    a binary or unreadable one is a DataError naming it."""
    f = open_regular(path, limit, bound)
    if f is None:
        return None
    try:
        with f:
            data = f.read(limit + 1)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > limit:  # it grew since
        raise DataError(f"{path} is more than {bound} ({limit:,} bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a text file (not UTF-8); prepare the dataset again") from None


def listing_bytes(dataset: "Dataset") -> tuple[int, str]:
    """(the most that a file listing each image of `dataset` on a line takes, checksums.txt
    and verified.txt, and that bound in words)."""
    rels = [rel for s in SPLITS for rel, _ in dataset.split(s)]
    return sum(len(rel.encode()) + LINE_NUMBERS for rel in rels), f"a listing of its {len(rels):,} images takes"


def write_checksums(path: Path, entries: list[tuple[str, int, int]]) -> None:
    """entries: (relative path, size in bytes, CRC-32) per stored image."""
    atomic_write(path, "".join(f"{rel} {size} {crc:08x}\n" for rel, size, crc in sorted(entries)))


def read_checksums(dataset: "Dataset") -> dict[str, tuple[int, int]] | None:
    """relative path -> (size, CRC-32) from checksums.txt; None when the set has none. One that
    is no regular file, or longer than a listing of the set's images, is a DataError."""
    path = dataset.root / CHECKSUMS
    text = read_text(path, *listing_bytes(dataset))
    if text is None:
        return None
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        rest, _, crc = line.rpartition(" ")
        rel, _, size = rest.rpartition(" ")
        try:
            out[rel] = (int(size), int(crc, 16))
        except ValueError:
            raise DataError(f"{path}: line {n} is not '<path> <bytes> <crc32>': {line[:200]!r}") from None
    return out


def read_manifest(path: Path, num_classes: int, count: int) -> list[tuple[str, int]]:
    """The items of a manifest that meta.json says lists `count` images."""
    text = read_text(path, count * (REL_BYTES + LINE_NUMBERS), f"a manifest of {count:,} images takes")
    if text is None:
        raise DataError(f"dataset {path.parent} is missing {path.name}")
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        rel, _, label = line.rpartition(" ")
        if not rel or not (label.isascii() and label.isdigit()) or int(label) >= num_classes or "\0" in rel:
            raise DataError(f"{path}: line {n} is not '<path> <label below {num_classes}>': {line[:80]!r}")
        items.append((rel, int(label)))
    return items


@dataclass
class Dataset:
    """A prepared (or synthetic) dataset, validated. Pixel statistics are in 0..255 units."""

    root: Path
    classes: list[str]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    mean: np.ndarray      # (S, S, 3) float32
    eigvals: np.ndarray   # (3,) descending
    eigvecs: np.ndarray   # (3, 3), column i belongs to eigvals[i]
    image_size: int
    meta: dict = field(default_factory=dict)

    def split(self, name: str) -> list[tuple[str, int]]:
        if name not in SPLITS:
            raise DataError(f"unknown split '{name}'; a dataset has {', '.join(SPLITS)}")
        return getattr(self, name)


def _missing_files(root: Path, items: list[tuple[str, int]]) -> list[str]:
    """Manifest entries with no file; lists each folder once instead of a stat per image."""
    listed: dict[str, set[str]] = {}
    missing = []
    for rel, _ in items:
        folder, _, name = rel.rpartition("/")
        if folder not in listed:
            try:
                listed[folder] = {e.name for e in os.scandir(root / folder)}
            except (FileNotFoundError, NotADirectoryError):
                listed[folder] = set()
        if name not in listed[folder]:
            missing.append(rel)
    return missing


def open_dataset(root: Path) -> Dataset:
    """Open and check a dataset directory; any missing or corrupt part is a DataError naming it."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset {root} does not exist (make one with `twocol prepare SRC {root}` "
                        f"or `twocol synth {root} --classes K --per-class M`)")
    meta_path = root / META
    text = read_text(meta_path, META_BYTES, "a meta.json takes")
    if text is None:
        if (root / PARTIAL).is_dir():
            raise DataError(f"dataset {root} is incomplete (its prepare or synth run was interrupted); "
                            "run the same command again to finish it")
        raise DataError(f"{root} is not a twocol dataset: it has no {META} (make one with "
                        f"`twocol prepare SRC {root}` or `twocol synth {root} --classes K --per-class M`)")
    try:
        meta = json.loads(text)
        size = int(meta["image_size"])
        # The counts bound what the set's other files may hold.
        counts = {k: meta[k] for k in ("classes", *SPLITS)}
        if not all(type(n) is int and n >= 0 for n in counts.values()):
            raise ValueError("a count is not a whole number")
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{meta_path} is corrupt (not the JSON that prepare writes)") from None
    if meta.get("format") != FORMAT:
        raise DataError(f"{root} was written in dataset format {meta.get('format')!r}; this version "
                        f"reads format {FORMAT}: prepare it again")
    text = read_text(root / CLASSES, counts["classes"] * (NAME_BYTES + 1), f"{counts['classes']:,} class names take")
    if text is None:
        raise DataError(f"dataset {root} is missing {CLASSES}")
    classes = text.splitlines()
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise DataError(f"{root / CLASSES} must list at least 2 distinct class names, one per line")
    manifests = {s: read_manifest(root / f"{s}.txt", len(classes), counts[s]) for s in SPLITS}
    for s, items in manifests.items():
        if not items:
            raise DataError(f"dataset {root}: the {s} split is empty")
        if counts[s] != len(items):
            raise DataError(f"dataset {root}: {s}.txt lists {len(items)} images but {META} says {counts[s]}")
        missing = _missing_files(root, items)
        if missing:
            raise DataError(f"dataset {root}: {len(missing)} {s} image(s) listed in {s}.txt are missing, "
                            f"e.g. {missing[0]}")
    # The mean image (float32) and three small arrays, in a zip.
    stats = open_regular(root / STATS, size * size * 3 * 4 + (1 << 16), f"the statistics of {size}px images take")
    if stats is None:
        raise DataError(f"dataset {root} is missing {STATS}")
    shapes = {"mean": (size, size, 3), "eigvals": (3,), "eigvecs": (3, 3)}
    try:
        with stats, np.load(stats) as z:
            # Shapes are read from each array's header first: a compressed member of a few
            # bytes can claim gigabytes.
            found = {}
            for name in shapes:
                with z.zip.open(f"{name}.npy") as f:
                    major, _ = np.lib.format.read_magic(f)
                    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    found[name] = read_header(f)[0]
            if found != shapes:
                raise DataError(f"{root / STATS}: " + ", ".join(f"{k} {v}" for k, v in found.items())
                                + "; expected " + ", ".join(map(str, shapes.values())) + f" for {size}px images")
            mean, eigvals, eigvecs = z["mean"].astype(np.float32), z["eigvals"], z["eigvecs"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        raise DataError(f"{root / STATS} is corrupt (needs mean, eigvals and eigvecs)") from None
    if not (np.isfinite(mean).all() and np.isfinite(eigvals).all() and np.isfinite(eigvecs).all()):
        raise DataError(f"{root / STATS} holds non-finite values")
    return Dataset(root=root, classes=classes, train=manifests["train"], val=manifests["val"], mean=mean,
                   eigvals=eigvals.astype(np.float64), eigvecs=eigvecs.astype(np.float64),
                   image_size=size, meta=meta)
