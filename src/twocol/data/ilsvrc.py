"""`twocol prepare SRC DST` from the ILSVRC archives as image-net.org hands them out, nothing
extracted to disk.

Read: ILSVRC-2012 (ILSVRC2012_img_train.tar: one tar per class, <wnid>.tar, of <wnid>_<n>.JPEG;
ILSVRC2012_img_val.tar: ILSVRC2012_val_<8 digits>.JPEG; ILSVRC2012_devkit_t12.tar.gz) and
ILSVRC-2010 (ILSVRC2010_images_train.tar and _val.tar alike, ILSVRC2010_devkit-1.0.tar.gz,
and for its test set, whose labels were released, ILSVRC2010_images_test.tar with
ILSVRC2010_test_ground_truth.txt). The classes and the labels come from the devkit
(devkit.py); the stored set is the one prepare makes of the extracted tree with the same labels.

The validation (or test) archive is streamed first, then the training archive, each once
from start to end (tarstream.py): the walk hands each image on as where it lies in the archive,
in chunks, to the worker processes of build.py, which read it back and resize it; every byte
read goes through the archive's MD5, compared with the published one at the end (a mismatch
is recorded in meta.json, not fatal: the whole download is read before its MD5 is known).
A rerun reads the archives again from the start (the MD5 needs every byte) and makes only
what no earlier run stored.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np

from ..errors import DataError
from .build import BadImage, Item, build_from, chunk_size, chunked, printable, worker_count
from .decode import load_bytes
from .devkit import Devkit, read_devkit, read_ids, read_small
from .layout import SPLITS, class_folders, stored_path
from .tarstream import Member, Skipped, TarStream, read_member


@dataclass(frozen=True)
class Release:
    name: str          # as in its file names: "ILSVRC2012"
    train: str
    val: str
    devkit: str
    val_truth: str     # the validation ground truth, in the devkit's data/ folder
    test: str | None = None        # a test archive whose labels were released
    test_truth: str | None = None  # ... beside the archives
    md5: dict[str, str] = field(default_factory=dict)  # published MD5 of each file

    @property
    def title(self) -> str:
        return f"ILSVRC-{self.name[-4:]}"

    def files(self, split: str) -> list[str]:
        """The files prepare reads when `split` (val or test) becomes the set's val split."""
        return [self.train, self.devkit] + ([self.val] if split == "val" else [self.test, self.test_truth])

    def all_files(self) -> set[str]:
        return set(self.files("val")) | (set(self.files("test")) if self.test else set())


RELEASES = (
    Release("ILSVRC2012", "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz",
            "ILSVRC2012_validation_ground_truth.txt",
            md5={"ILSVRC2012_img_train.tar": "1d675b47d978889d74fa0da5fadfb00e",
                 "ILSVRC2012_img_val.tar": "29b22e2961454d5413ddabcf34fc5622",
                 "ILSVRC2012_devkit_t12.tar.gz": "fa75699e90414af021442c21a62c3abf"}),
    Release("ILSVRC2010", "ILSVRC2010_images_train.tar", "ILSVRC2010_images_val.tar", "ILSVRC2010_devkit-1.0.tar.gz",
            "ILSVRC2010_validation_ground_truth.txt", test="ILSVRC2010_images_test.tar",
            test_truth="ILSVRC2010_test_ground_truth.txt"),
)
SPLIT_CHOICES = ("val", "test")


def _what_is_read() -> str:
    return "; ".join(f"{r.title}: {', '.join(r.files('val'))}"
                     + (f" (or, for its test set, {r.test} and {r.test_truth} instead of {r.val})" if r.test else "")
                     for r in RELEASES)


def find_release(src: Path) -> Release | None:
    """The release whose archives `src` holds; None when it holds no ILSVRC file at all."""
    try:
        names = {e.name for e in os.scandir(src)}
    except OSError as e:
        raise DataError(f"cannot list {src}: {e.strerror or e}") from None
    found = [r for r in RELEASES if names & r.all_files()]
    if len(found) > 1:
        raise DataError(f"{src} holds the archives of {' and '.join(r.title for r in found)}: give a folder "
                        "with one release")
    if found:
        return found[0]
    other = sorted(n for n in names if re.match(r"ILSVRC\d{4}", n))
    if other:
        raise DataError(f"{src} holds {printable(other[0])}, which prepare does not read; it reads {_what_is_read()}")
    return None


def _member_name(entry: Member | Skipped) -> str:
    return PurePosixPath(entry.names[-1]).name


def load_member(member: Member, size: int) -> np.ndarray:
    """A worker's work: an archive member -> the stored square."""
    try:
        data = read_member(member)
    except ValueError as e:
        raise BadImage(f"too large: {e}") from None
    except EOFError as e:
        raise BadImage(f"truncated: {e}") from None
    return load_bytes(data, size)


class ArchiveSource:
    """The images of a release's archives for build_from, streamed (see build.Listed)."""

    def __init__(self, src: Path, release: Release, devkit: Devkit, split: str, truth: list[int], md5: dict):
        self.src, self.release, self.devkit, self.split, self.truth = src, release, devkit, split, truth
        self.classes = devkit.classes
        self._index = {c: i for i, c in enumerate(self.classes)}
        self._folders = class_folders(self.classes)
        self.folders = {f"{s}/{f}" for s in SPLITS for f in self._folders.values()}
        self.total = devkit.train_images + len(truth)
        stats = [(n, os.stat(src / n).st_size, os.stat(src / n).st_mtime_ns) for n in release.files(split)]
        self.identity = hashlib.sha1(json.dumps([release.name, split, stats]).encode()).hexdigest()
        self.skipped: list[tuple[str, str, str]] = []
        self._md5 = dict(md5)
        self.extra: dict = {}

    def chunks(self) -> Iterator[tuple[str, tuple[Item, ...]]]:
        yield from chunked("val", self._val(), chunk_size(len(self.truth)))
        yield from chunked("train", self._train(), chunk_size(self.devkit.train_images))
        published = self.release.md5
        archives = {name: {"md5": md5, "published": published.get(name), "matches": published.get(name) == md5}
                    for name, md5 in self._md5.items()}
        self.extra = {"release": self.release.name, "val_split": self.split, "archives": archives,
                      "md5_as_published": all(a["matches"] for a in archives.values()) if published else None}

    def _val(self) -> Iterator[Item]:
        name = self.release.val if self.split == "val" else self.release.test
        path = self.src / name
        pattern = re.compile(rf"{self.release.name}_{self.split}_(\d{{8}})\.JPEG")
        truth_file = self.release.val_truth if self.split == "val" else self.release.test_truth
        seen: set[int] = set()
        taken: set[str] = set()
        with TarStream(path) as tar:
            for entry in tar.walk():
                if isinstance(entry, Skipped):
                    self.skipped.append(("val", str(entry), entry.reason))
                    continue
                base = _member_name(entry)
                m = pattern.fullmatch(base)
                if m is None:
                    self.skipped.append(("val", str(entry), f"no label: not named {self.release.name}_{self.split}_"
                                                            "<8 digits>.JPEG"))
                    continue
                number = int(m[1])
                if number in seen:
                    raise DataError(f"{path} holds two images numbered {number} (the second: "
                                    f"{printable(entry.names[-1])}): the devkit does not match the archive")
                if not 1 <= number <= len(self.truth):
                    raise DataError(f"{path} holds {printable(entry.names[-1])}, but {truth_file} labels "
                                    f"{len(self.truth):,} images: the devkit does not match the archive")
                seen.add(number)
                wnid = self.devkit.wnid_of[self.truth[number - 1]]
                yield Item(entry, stored_path("val", self._folders[wnid], base, taken), self._index[wnid])
            self._md5[name] = tar.md5()
        if len(seen) != len(self.truth):
            first = min(set(range(1, len(self.truth) + 1)) - seen)
            raise DataError(f"{truth_file} labels {len(self.truth):,} images but {path} holds {len(seen):,}: "
                            f"{self.release.name}_{self.split}_{first:08d}.JPEG is missing; the devkit does not "
                            "match the archive")

    def _train(self) -> Iterator[Item]:
        path = self.src / self.release.train
        seen: set[str] = set()
        taken: set[str] = set()
        with TarStream(path) as tar:
            for entry in tar.walk(nest=lambda n: n.endswith(".tar")):
                if isinstance(entry, Skipped) or len(entry.names) == 1:
                    why = entry.reason if isinstance(entry, Skipped) else "not a tar of one class (<wnid>.tar)"
                    self.skipped.append(("train", str(entry), why))
                    continue
                wnid = PurePosixPath(entry.names[0]).name[:-len(".tar")]
                if wnid not in self._index:
                    raise DataError(f"{path} holds {printable(entry.names[0])}, but {printable(wnid)} is not a class "
                                    f"(a leaf synset) of {self.src / self.release.devkit}: the devkit does not "
                                    "match the archive")
                seen.add(wnid)
                yield Item(entry, stored_path("train", self._folders[wnid], _member_name(entry), taken),
                           self._index[wnid])
            self._md5[self.release.train] = tar.md5()
        self.skipped += [("train", f"{path}/{c}.tar", "no training image of this class in the archive")
                         for c in self.classes if c not in seen]


def prepare_archives(src: Path, dst: Path, release: Release, *, size: int, quality: int, workers: int | None,
                     split: str = "val") -> dict:
    """Prepare the archives of `release` in `src` into `dst`; `split` ("val", or "test" where the
    release's test labels were released) becomes the set's val split. Returns the set's meta."""
    if split not in SPLIT_CHOICES:
        raise DataError(f"--val-split must be one of {', '.join(SPLIT_CHOICES)}, got {split!r}")
    if split == "test" and release.test is None:
        raise DataError(f"{release.title} has no test labels (they were never released): --val-split test "
                        f"is read for {', '.join(r.title for r in RELEASES if r.test)} only")
    missing = [n for n in release.files(split) if not (src / n).is_file()]
    if missing:
        raise DataError(f"{src} lacks {', '.join(missing)}: prepare from the {release.title} archives reads "
                        f"{', '.join(release.files(split))}")
    workers = worker_count(workers)
    devkit = read_devkit(src / release.devkit, release.name, release.val_truth)
    md5 = {release.devkit: devkit.md5}
    if split == "val":
        truth = devkit.val_ids
    else:
        path = src / release.test_truth
        data = read_small(path)
        truth = read_ids(data, f"{release.name}_ID", devkit.wnid_of, str(path))
        md5[release.test_truth] = hashlib.md5(data).hexdigest()
    source = ArchiveSource(src, release, devkit, split, truth, md5)
    params = {"kind": "prepared", "source": str(src.resolve()), "image_size": size, "quality": quality,
              "release": release.name, "val_split": split}
    return build_from(dst, source=source, params=params, produce=functools.partial(load_member, size=size),
                      size=size, quality=quality, workers=workers, label="prepare")
