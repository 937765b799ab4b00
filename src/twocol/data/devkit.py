"""The ILSVRC development kit: the classes and the labels of the validation images, read from
the devkit archive as image-net.org hands it out (a .tar.gz holding data/meta.mat and
data/<release>_validation_ground_truth.txt).

meta.mat holds the struct array `synsets`: one synset per element, with its `<release>_ID`,
`WNID`, `num_children` and `num_train_images` (and words, gloss, children, wordnet_height, not
used here). The classes are the leaf synsets (num_children 0), named by WNID and sorted by it,
as prepare sorts the class folders of a tree: label i is the i-th WNID in that order, whatever
the IDs. A ground-truth file holds one ID a line, one line per image, in the order of the
images' file names. Whatever does not fit is one line naming the file and the first problem.
"""
from __future__ import annotations

import hashlib
import io
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from ..errors import DataError
from .build import printable
from .layout import open_regular

# Bytes read of a file inside the devkit at most (meta.mat: about 0.3 MB; the archive: 2.5 MB).
MAX_DEVKIT_FILE = 64 << 20


@dataclass(frozen=True)
class Devkit:
    classes: list[str]            # the leaf synsets' WNIDs, sorted: label i is classes[i]
    wnid_of: dict[int, str]       # a leaf synset's ID -> its WNID
    train_images: int             # num_train_images summed over the leaves
    val_ids: list[int]            # the validation images' IDs, in the order of their file names
    md5: str                      # of the devkit archive


def read_small(path: Path) -> bytes:
    """The whole of a devkit archive or a ground-truth file beside the archives, read once (its
    MD5 is taken from these bytes), if it is a regular file of at most MAX_DEVKIT_FILE bytes."""
    f = open_regular(path, MAX_DEVKIT_FILE, "a devkit's file takes")
    if f is None:
        raise DataError(f"{path} is missing")
    try:
        with f:
            return f.read(MAX_DEVKIT_FILE + 1)  # bounded, should it have grown since
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None


def _member(tar: tarfile.TarFile, suffix: str, where: str) -> bytes:
    """The content of the one regular file of `tar` whose name ends with `suffix`."""
    for info in tar:
        if info.isreg() and (info.name == suffix or info.name.endswith("/" + suffix)):
            if info.size > MAX_DEVKIT_FILE:
                raise DataError(f"{where}: {info.name} holds {info.size:,} bytes, not a devkit's")
            return tar.extractfile(info).read()
    raise DataError(f"{where} holds no {suffix}: not the devkit of this release")


def _number(value, what: str) -> int:
    """A whole number from a MATLAB field (a double or an integer type, squeezed)."""
    try:
        number = float(np.asarray(value).item())
    except (TypeError, ValueError) as e:
        raise DataError(f"{what} is not a number ({e})") from None
    if not number.is_integer():
        raise DataError(f"{what} is {number}, not a whole number")
    return int(number)


def read_meta(data: bytes, id_field: str, where: str) -> tuple[list[str], dict[int, str], int]:
    """(classes, leaf ID -> WNID, training images of the leaves) from meta.mat's bytes."""
    try:
        synsets = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True).get("synsets")
    except (ValueError, TypeError, KeyError, IndexError, EOFError, OSError, NotImplementedError,
            zlib.error, scipy.io.matlab.MatReadError) as e:
        raise DataError(f"{where} is not a MATLAB file that scipy.io reads ({e})") from None
    need = (id_field, "WNID", "num_children", "num_train_images")
    names = getattr(getattr(synsets, "dtype", None), "names", None) or ()
    if missing := [f for f in need if f not in names]:
        raise DataError(f"{where} has no struct array 'synsets' with the field{'s' * (len(missing) > 1)} "
                        f"{', '.join(missing)}: not the {id_field[:-3]} devkit's")
    wnid_of: dict[int, str] = {}
    train_images = 0
    for i, s in enumerate(np.atleast_1d(synsets), 1):
        if _number(s["num_children"], f"{where}: synset {i}'s num_children") != 0:
            continue
        ident = _number(s[id_field], f"{where}: synset {i}'s {id_field}")
        wnid = s["WNID"]
        if not isinstance(wnid, str) or not wnid or not wnid.isprintable():
            raise DataError(f"{where}: synset {i}'s WNID {printable(repr(wnid))[:80]} is not a one-line name")
        if ident in wnid_of:
            raise DataError(f"{where}: two leaf synsets have {id_field} {ident} ({wnid_of[ident]}, {wnid})")
        wnid_of[ident] = wnid
        train_images += max(0, _number(s["num_train_images"], f"{where}: synset {i}'s num_train_images"))
    classes = sorted(wnid_of.values())
    if len(set(classes)) != len(classes):
        twice = next(c for a, c in zip(classes, classes[1:]) if a == c)
        raise DataError(f"{where}: two leaf synsets have the WNID {twice}")
    if len(classes) < 2:
        raise DataError(f"{where} has {len(classes)} leaf synset(s) (num_children 0): at least 2 classes are needed")
    return classes, wnid_of, train_images


def read_ids(data: bytes, id_field: str, wnid_of: dict[int, str], where: str) -> list[int]:
    """A ground-truth file's IDs, each the ID of a leaf synset."""
    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{where} is not a text file of {id_field}s") from None
    while lines and not lines[-1].strip():
        lines.pop()
    ids = []
    for n, line in enumerate(lines, 1):
        token = line.strip()
        if not token.isdigit():
            raise DataError(f"{where} line {n}: {printable(token)[:40]!r} is not an {id_field}")
        if int(token) not in wnid_of:
            raise DataError(f"{where} line {n}: {id_field} {int(token)} is not a class (no leaf synset of the "
                            "devkit's meta.mat has it)")
        ids.append(int(token))
    if not ids:
        raise DataError(f"{where} is empty")
    return ids


def read_devkit(path: Path, release: str, truth: str) -> Devkit:
    """The devkit archive at `path` of `release` ("ILSVRC2012"), whose validation ground truth
    is data/<truth>."""
    id_field = f"{release}_ID"
    data = read_small(path)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            meta = _member(tar, "data/meta.mat", str(path))
            ground_truth = _member(tar, f"data/{truth}", str(path))
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is not a gzip-compressed tar archive, or is cut short ({e})") from None
    classes, wnid_of, train_images = read_meta(meta, id_field, f"{path}/data/meta.mat")
    val_ids = read_ids(ground_truth, id_field, wnid_of, f"{path}/data/{truth}")
    return Devkit(classes, wnid_of, train_images, val_ids, hashlib.md5(data).hexdigest())
