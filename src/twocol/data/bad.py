"""Bad images after `prepare`: found, skipped, recorded, and a run stopped when there are many.

A stored image is bad when its file no longer matches checksums.txt (checked when a loader
starts: the CRC-32 by default, cached per file; only the size with data.verify_files=size),
when it cannot be decoded, or when it decodes to another size than the dataset's. Both loaders
find the same bad images (the DALI loader falls back to `read_image` whenever DALI fails on a
batch, so every verdict is this module's; a file corrupted in place, which DALI's decoder may
pass where Pillow's fails, is found by its CRC before either decodes it), leave each out of its
batch and report it as a `BadImage`. Both turn an image as its EXIF orientation says.

What stays deterministic: the epoch plan is never changed. A batch that holds a bad image is
delivered without it (one image smaller); every other image keeps its batch, position and
augmentation. Whether an image is bad depends only on its file, so a run resumed at any batch
drops the same images and sees the same batches as an uninterrupted one (as long as nobody
repairs or breaks files in between). A batch whose every image is bad, or a training epoch
with more than data.max_bad_fraction of its images bad, stops the run (train.py: this package
only reports what it skipped).

A run records each bad image in RUN/bad_images.tsv (epoch, split, path, reason; once per epoch
in which it was met) and as a "bad_image" row of metrics.jsonl.
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..atomic import atomic_write
from ..errors import DataError
from ..threads import note
from .layout import CHECKSUMS, VERIFIED, Dataset, listing_bytes, read_checksums, read_text

REASON_CHARS = 300  # a reason is one line of at most this many characters


class ImageProblem(Exception):
    """A stored image that cannot be used; the message is the reason."""


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
                # Turned as its EXIF orientation says, as DALI's decoders turn it (in place: an
                # upright image is not copied).
                ImageOps.exif_transpose(im, in_place=True)
                pixels = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ... for a bad file
        msg = str(e) or type(e).__name__
        if isinstance(e, OSError) and "truncat" in msg.lower():
            raise ImageProblem(one_line(f"truncated: {msg}")) from None
        raise ImageProblem(one_line(f"cannot decode: {msg}")) from None
    if pixels.shape != (size, size, 3):
        raise ImageProblem(f"is {pixels.shape[1]}x{pixels.shape[0]}, not the dataset's {size}x{size}")
    return pixels


# Frame headers (SOF) DALI's decoders read: baseline, extended sequential, progressive.
_SOF = {0xC0, 0xC1, 0xC2}
_HEAD = 4096  # bytes read for the header: prepare's JPEGs have their frame header in the first 200


def jpeg_problem(head: bytes, tail: bytes, path: Path, size: int) -> str | None:
    """Why a file is not a plain JPEG of size x size with 1 or 3 channels, read from its
    markers up to the frame header (`head`: its first bytes) and its last two bytes (`tail`),
    without decoding; None when it is."""
    if head[:2] != b"\xff\xd8":
        return "not a JPEG"
    if tail != b"\xff\xd9":
        return "no JPEG end marker"
    i = 2
    while True:
        if i + 4 > len(head):
            if len(head) == _HEAD:  # a long header: read the whole file
                head = path.read_bytes()
                continue
            return "no JPEG frame header"
        if head[i] != 0xFF:
            return "corrupt JPEG header"
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA or 0xD0 <= marker <= 0xD9:
            return "no JPEG frame header before the image data"
        if marker in _SOF or 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 10 > len(head):
                return "corrupt JPEG header"
            h, w = int.from_bytes(head[i + 5:i + 7], "big"), int.from_bytes(head[i + 7:i + 9], "big")
            channels = head[i + 9]
            if marker not in _SOF:
                return f"a JPEG of another kind (frame marker 0x{marker:02X})"
            if (h, w) != (size, size) or channels not in (1, 3):
                return f"a {w}x{h} JPEG with {channels} channels"
            return None
        i += 2 + int.from_bytes(head[i + 2:i + 4], "big")


def _read(path: Path, whole: bool, ends: bool) -> tuple[bytes | None, bytes, bytes]:
    """(the whole file or None, its first _HEAD bytes, its last 2) with one open; nothing
    when neither `whole` nor `ends` is asked for."""
    if not (whole or ends):
        return None, b"", b""
    fd = os.open(path, os.O_RDONLY)
    try:
        if whole:
            data = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
            return data, data[:_HEAD], data[-2:]
        return None, os.pread(fd, _HEAD, 0), os.pread(fd, 2, max(0, os.fstat(fd).st_size - 2))
    finally:
        os.close(fd)


def read_verified(dataset: Dataset) -> dict[str, tuple[int, int, int, int]]:
    """VERIFIED: relative path -> (size, mtime_ns, ctime_ns, CRC-32) of each file whose CRC
    was last found equal to checksums.txt's; {} when there is none or it cannot be read (it is
    a cache: the files are then read again, and it is written anew). One that is no regular
    file, or longer than a listing of the set's images, is not read, and one line says so."""
    out = {}
    try:
        text = read_text(dataset.root / VERIFIED, *listing_bytes(dataset))
    except DataError as e:
        note(f"{e}: ignored (the CRC of every file is read) and written anew")
        return out
    for line in (text or "").splitlines():
        parts = line.rsplit(" ", 4)
        try:
            out[parts[0]] = (int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4], 16))
        except (ValueError, IndexError):
            return {}  # a damaged cache is no cache
    return out


def write_verified(root: Path, verified: dict[str, tuple[int, int, int, int]]) -> None:
    """A dataset that cannot be written (read-only, shared) keeps no cache: its files are read
    at every start."""
    with contextlib.suppress(OSError):
        atomic_write(root / VERIFIED, "".join(f"{rel} {size} {m} {c} {crc:08x}\n"
                                              for rel, (size, m, c, crc) in sorted(verified.items())))


def check_files(dataset: Dataset, split: str, mode: str,
                jpeg_size: int | None = None) -> tuple[dict[int, str], set[int]]:
    """The start-up check of `split`'s files. Returns (manifest index -> reason for each file
    that no longer matches checksums.txt, the indices of the other files that are no plain
    JPEG of jpeg_size x jpeg_size).

    mode "crc" compares each file's CRC-32 with checksums.txt's, reading only the files that
    changed (size, mtime or ctime) since they were last found equal (VERIFIED, the cache, is
    in the dataset's folder); "size" compares only sizes (a stat per file: a file corrupted
    in place is then found, or not, by each loader's decoder); "off" compares nothing (nor
    does a set without checksums.txt). The JPEG check (with jpeg_size) reads each file's first
    bytes and last two: the DALI loader gives DALI only files that pass it, since some
    malformed files crash DALI's decoder (a segmentation fault) instead of raising an error."""
    sums = read_checksums(dataset) if mode != "off" else None
    if sums is None and jpeg_size is None:
        return {}, set()
    crc = mode == "crc" and sums is not None
    verified = read_verified(dataset) if crc else {}
    fresh = {}
    bad, odd = {}, set()
    for i, (rel, _) in enumerate(dataset.split(split)):
        path = dataset.root / rel
        want = sums.get(rel) if sums is not None else None
        try:
            st = os.stat(path)
            stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            whole = crc and want is not None and verified.get(rel) != (*stamp, want[1])
            data, head, tail = _read(path, whole, jpeg_size is not None)
        except OSError as e:
            bad[i] = one_line(f"unreadable: {e.strerror or e}")
            continue
        if sums is not None:
            if want is None:
                bad[i] = f"not in {CHECKSUMS}"
                continue
            length = len(data) if data is not None else st.st_size
            if length != want[0]:
                bad[i] = f"{length} bytes, {CHECKSUMS} says {want[0]} (changed since it was stored)"
                continue
            if data is not None:
                if zlib.crc32(data) != want[1]:
                    bad[i] = f"CRC-32 differs from {CHECKSUMS} (changed since it was stored)"
                    continue
                fresh[rel] = (*stamp, want[1])
        if jpeg_size is not None and jpeg_problem(head, tail, path, jpeg_size) is not None:
            odd.add(i)
    if fresh:
        write_verified(dataset.root, {rel: v for rel, v in {**verified, **fresh}.items() if rel in sums})
    return bad, odd


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
