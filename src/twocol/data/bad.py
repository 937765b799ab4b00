"""Bad images after `prepare`: found, skipped, recorded, and a run stopped when there are many.

A stored image is bad when its file no longer matches checksums.txt (checked when a loader
starts: the size by default, the CRC-32 too with data.verify_files=crc), when it cannot be
decoded, or when it decodes to another size than the dataset's. Both loaders find the same bad
images (the DALI loader falls back to `read_image` whenever DALI fails on a batch, so every
verdict is this module's), leave each out of its batch and report it as a `BadImage`.

What stays deterministic: the epoch plan is never changed. A batch that holds a bad image is
delivered without it (one image smaller); every other image keeps its batch, position and
augmentation. Whether an image is bad depends only on its file, so a run resumed at any batch
drops the same images and sees the same batches as an uninterrupted one (as long as nobody
repairs or breaks files in between). A batch whose every image is bad, or a training epoch
with more than data.max_bad_fraction of its images bad, stops the run (train.py).

A run records each bad image in RUN/bad_images.tsv (epoch, split, path, reason; once per epoch
in which it was met) and as a "bad_image" row of metrics.jsonl.
"""
from __future__ import annotations

import json
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from .layout import CHECKSUMS, Dataset, read_checksums

REASON_CHARS = 300  # a reason is one line of at most this many characters


class ImageProblem(Exception):
    """A stored image that cannot be used; the message is the reason."""


class TooManyBadImages(DataError):
    """More bad images than a run accepts (one line, exit code 2)."""


@dataclass(frozen=True)
class BadImage:
    index: int   # in the split's manifest
    path: str    # relative to the dataset root
    reason: str


def one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 3] + "..."


def read_image(path: Path, size: int) -> np.ndarray:
    """A stored image as (size, size, 3) uint8 RGB, or ImageProblem with the reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                pixels = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ... for a bad file
        msg = str(e) or type(e).__name__
        if isinstance(e, OSError) and "truncat" in msg:
            raise ImageProblem(one_line(f"truncated: {msg}")) from None
        raise ImageProblem(one_line(f"cannot decode: {msg}")) from None
    if pixels.shape != (size, size, 3):
        raise ImageProblem(f"is {pixels.shape[1]}x{pixels.shape[0]}, not the dataset's {size}x{size}")
    return pixels


def check_files(dataset: Dataset, split: str, mode: str) -> dict[int, str]:
    """The start-up check: manifest index -> reason for every file of `split` that no longer
    matches checksums.txt. mode "size" stats each file, "crc" also reads it; "off", or a set
    without checksums.txt, checks nothing (bad files are then found when read)."""
    if mode == "off":
        return {}
    sums = read_checksums(dataset.root / CHECKSUMS)
    if sums is None:
        return {}
    bad = {}
    for i, (rel, _) in enumerate(dataset.split(split)):
        want = sums.get(rel)
        if want is None:
            bad[i] = f"not in {CHECKSUMS}"
            continue
        path = dataset.root / rel
        try:
            size = os.stat(path).st_size
            if size != want[0]:
                bad[i] = f"{size} bytes, {CHECKSUMS} says {want[0]} (changed since it was stored)"
            elif mode == "crc" and zlib.crc32(path.read_bytes()) != want[1]:
                bad[i] = f"CRC-32 differs from {CHECKSUMS} (changed since it was stored)"
        except OSError as e:
            bad[i] = one_line(f"unreadable: {e.strerror or e}")
    return bad


class BadImageLog:
    """Appends the bad images a run meets to RUN/bad_images.tsv and metrics.jsonl, each
    (epoch, split, path) once, also across a resume that reads a batch again."""

    HEADER = "# epoch\tsplit\tpath\treason\n"

    def __init__(self, run_dir: Path, metrics_path: Path, rank: int | None = None):
        self.path, self.metrics_path, self.rank = run_dir / "bad_images.tsv", metrics_path, rank
        self.seen: set[tuple[int, str, str]] = set()
        if self.path.is_file():
            for line in self.path.read_text(errors="replace").splitlines():
                parts = line.split("\t")
                if len(parts) == 4 and parts[0].isdigit():
                    self.seen.add((int(parts[0]), parts[1], parts[2]))

    def record(self, epoch: int, split: str, bad: list[BadImage]) -> None:
        """`epoch` 1-based, as in metrics.jsonl."""
        new = [b for b in bad if (epoch, split, b.path) not in self.seen]
        if not new:
            return
        fresh = not self.path.is_file()
        with open(self.path, "a") as tsv, open(self.metrics_path, "a") as metrics:
            if fresh:
                tsv.write(self.HEADER)
            for b in new:
                self.seen.add((epoch, split, b.path))
                path = one_line(b.path).replace("\t", " ")
                tsv.write(f"{epoch}\t{split}\t{path}\t{one_line(b.reason)}\n")
                row = {"kind": "bad_image", "epoch": epoch, "split": split, "path": b.path, "reason": b.reason}
                if self.rank is not None:
                    row["rank"] = self.rank
                metrics.write(json.dumps(row) + "\n")
