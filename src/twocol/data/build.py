"""Writing a dataset in the layout of layout.py, shared by `prepare` (images from a source tree
or from the ILSVRC archives) and `synth` (images drawn from a seed).

Work is cut into chunks of images, which a source gives all at once (a tree, the synthetic set)
or as it reads them (archives streamed from the disk: ilsvrc.py). A worker process turns each image of a chunk into its stored
JPEG (atomically), decodes what it stored, and adds it to the chunk's pixel statistics; the
chunk's result is then saved under .partial/. A rerun reuses every saved chunk and, inside an
unfinished chunk, every image already stored, so an interrupted run resumes where it stopped.
Statistics are exact integer sums over the stored (decoded) pixels, so the mean image and the
covariance are those of the very files a loader will read; the size and CRC-32 of each stored
file go to checksums.txt, which the loaders check the files against before reading them.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import zlib
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Iterator

import numpy as np
from PIL import Image

from ..atomic import atomic_write, remove_stale_temps, temp_path
from ..errors import DataError
from ..lock import LOCK, DirLock
from ..monitor import Progress
from ..threads import at_most_cpus, available_cpus
from .layout import (CHECKSUMS, CLASSES, FORMAT, META, PARTIAL, REPORT, SPLITS, STATS, open_dataset, write_checksums,
                     write_manifest)
from .lighting import pca


def printable(name: str) -> str:
    """`name` fit for one line of UTF-8 text: bytes that are not UTF-8 (a file name keeps them
    as surrogates) become \\xNN, other unprintable characters (newlines, tabs) escapes."""
    try:
        text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file name holds
        text = name.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class BadImage(Exception):
    """A source file that cannot become a training image; the message is the reason."""


@dataclass(frozen=True)
class Item:
    key: Hashable   # what `produce` turns into pixels: a source path, or a synthetic image's spec
    rel: str        # output path relative to the dataset root
    label: int


@dataclass(frozen=True)
class Chunk:
    root: Path
    split: str
    items: tuple[Item, ...]
    produce: Callable[[Hashable], np.ndarray]  # key -> (S, S, 3) uint8, or raises BadImage
    size: int
    quality: int
    tag: str  # identifies the run's parameters; part of the chunk's name
    durable: bool = True  # fsync each stored file (atomic_write); False: only the atomic rename

    @property
    def name(self) -> str:
        h = hashlib.sha1(repr((self.tag, self.split, self.items)).encode()).hexdigest()[:20]
        return f"{self.split}-{h}.npz"


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def store(path: Path, data: bytes, durable: bool) -> None:
    """Write a stored image or a chunk's result: atomic_write (fsynced) when durable, else the
    same temporary file and rename without the fsyncs, for a throwaway set such as the e2e
    bench's (two fsyncs a file cost milliseconds each on some disks, minutes for 10,000 files
    written by 16 processes at once). Either way a reader never sees half a file. A failed
    write (a full disk) names the file: the OS's error for write() names none."""
    try:
        if durable:
            atomic_write(path, data)
            return
        tmp = temp_path(path)
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise


def decode_stored(data: bytes | Path) -> np.ndarray:
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    with Image.open(src) as im:
        return np.asarray(im.convert("RGB"))


def run_chunk(chunk: Chunk) -> dict:
    """Store every image of the chunk (reusing the ones already stored); return and save its
    manifest entries, its bad files and its pixel sums."""
    s = chunk.size
    pix_sum = np.zeros((s, s, 3), np.int64)
    rgb_sum = np.zeros(3, np.int64)
    rgb_outer = np.zeros((3, 3), np.int64)
    ok, bad, sums = [], [], []
    for item in chunk.items:
        out = chunk.root / item.rel
        pixels = data = None
        if out.exists():
            try:
                data = out.read_bytes()
                pixels = decode_stored(data)
            except OSError:
                pixels = None  # unreadable leftover: make it again
            if pixels is not None and pixels.shape != (s, s, 3):
                pixels = None
        if pixels is None:
            try:
                made = chunk.produce(item.key)
            except BadImage as e:
                bad.append((str(item.key), str(e)))
                continue
            data = encode_jpeg(made, chunk.quality)
            store(out, data, chunk.durable)
            pixels = decode_stored(data)
        ok.append((item.rel, item.label))
        sums.append((len(data), zlib.crc32(data)))
        pix_sum += pixels
        flat = pixels.reshape(-1, 3).astype(np.float64)
        # Per image the sums stay below 2**53, so float64 products are exact integers.
        rgb_sum += flat.sum(0).astype(np.int64)
        rgb_outer += (flat.T @ flat).astype(np.int64)
    result = {"rel": np.array([r for r, _ in ok], dtype=str), "label": np.array([l for _, l in ok], np.int64),
              "size": np.array([n for n, _ in sums], np.int64), "crc": np.array([c for _, c in sums], np.int64),
              "bad_key": np.array([k for k, _ in bad], dtype=str), "bad_reason": np.array([r for _, r in bad], dtype=str),
              "pix_sum": pix_sum, "rgb_sum": rgb_sum, "rgb_outer": rgb_outer}
    # A chunk's pixel sums fit int32 (at most 1024 x 255); ImageNet at 256 px makes about a
    # thousand chunk files, so their size matters.
    buf = io.BytesIO()
    np.savez_compressed(buf, **{**result, "pix_sum": pix_sum.astype(np.int32)})
    store(chunk.root / PARTIAL / chunk.name, buf.getvalue(), chunk.durable)
    return result


def _load_chunk(path: Path) -> dict | None:
    try:
        with np.load(path) as z:
            saved = {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None
    # Saved by a version without checksums: run it again (its images are reused).
    return saved if "crc" in saved else None


def checksum_files(root: Path, rels: list[str]) -> list[tuple[str, int, int]]:
    """(relative path, size, CRC-32) of stored files, read from disk."""
    out = []
    for rel in rels:
        data = (root / rel).read_bytes()
        out.append((rel, len(data), zlib.crc32(data)))
    return out


def chunk_size(n: int) -> int:
    # Small enough that two to sixteen workers stay busy and progress moves; large enough that
    # ImageNet makes about a thousand chunk files, not a million.
    return max(16, min(1024, -(-n // 64)))


def _pool_context():
    # fork where there is one (as torch's DataLoader does): spawn and forkserver re-run the
    # caller's main script in every worker, which breaks a plain script that calls synthesize().
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def check_destination(root: Path, params: dict) -> dict | None:
    """Refuse a destination that holds something else; return its meta if it is complete."""
    meta_path, params_path = root / META, root / PARTIAL / "params.json"
    for path in (meta_path, params_path):
        if path.is_file():
            try:
                theirs = json.loads(path.read_text())
                theirs = theirs.get("params", theirs)
            except ValueError:
                raise DataError(f"{path} is corrupt; delete {root} and run again") from None
            if theirs != params:
                diff = sorted(k for k in set(params) | set(theirs) if params.get(k) != theirs.get(k))
                raise DataError(
                    f"{root} holds a dataset made with other settings ({', '.join(f'{k}={theirs.get(k)!r}' for k in diff)}, "
                    f"now {', '.join(f'{k}={params.get(k)!r}' for k in diff)}); use another directory or delete it")
    if meta_path.is_file():
        return json.loads(meta_path.read_text())
    if root.is_dir() and not params_path.is_file() and any(e.name != LOCK for e in os.scandir(root)):
        raise DataError(f"{root} is not empty and is not a twocol dataset; give an empty or new directory")
    return None


def worker_count(workers: int | None) -> int:
    """prepare's and synth's --workers: None -> the CPUs this process may use; at least 1."""
    if workers is None:
        return available_cpus()[0]
    if workers < 1:
        raise DataError(f"--workers must be at least 1, got {workers}")
    return at_most_cpus(workers, f"--workers {workers}")


def _one_writer(build_fn):
    """Run `build_fn(root, ...)` holding the lock of `root`: a second writer of the same
    dataset gets a LockError naming the first one's pid."""
    @functools.wraps(build_fn)
    def locked(root: Path, **kw):
        with DirLock(root, "dataset"):
            try:
                return build_fn(Path(root), **kw)
            except OSError as e:  # a write of the dataset's own files (stats, manifests) names none
                if e.filename is None:
                    e.filename = str(root)
                raise
    return locked


class Listed:
    """A source whose work is known before any image is made (a tree, the synthetic set): what
    `build_from` reads. A source streamed from archives (ilsvrc.py) has the same attributes, its
    skipped files and `extra` complete once `chunks()` is exhausted.

    identity: what the set is made of; a complete set of the same identity is left as it is.
    classes, folders (every folder an image goes to), total (images expected, for progress),
    chunks(): (split, items) in the order they are made, skipped: (split, file, reason) known
    bad without decoding, extra: entries added to meta.json."""

    def __init__(self, classes: list[str], work: dict[str, list[Item]], skipped: list[tuple[str, str, str]]):
        self.classes, self.work, self.skipped, self.extra = classes, work, list(skipped), {}
        self.identity = hashlib.sha1(repr((sorted((s, tuple(v)) for s, v in work.items()),
                                           self.skipped)).encode()).hexdigest()
        self.folders = {i.rel.rpartition("/")[0] for items in work.values() for i in items}
        self.total = sum(len(items) for items in work.values())

    def chunks(self) -> Iterator[tuple[str, tuple[Item, ...]]]:
        for split in SPLITS:
            items = self.work.get(split, [])
            yield from chunked(split, iter(items), chunk_size(len(items)))


def chunked(split: str, items: Iterator[Item], step: int) -> Iterator[tuple[str, tuple[Item, ...]]]:
    """`items` as the chunks of `step` items a source gives (split, items), the last one shorter;
    a source that reads as it goes (the archives) gives them as it reads."""
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == step:
            yield split, tuple(batch)
            batch = []
    if batch:
        yield split, tuple(batch)


def build(root: Path, *, params: dict, classes: list[str], work: dict[str, list[Item]],
          produce: Callable[[Hashable], np.ndarray], size: int, quality: int, workers: int,
          label: str = "images", skipped: list[tuple[str, str, str]] = (), durable: bool = True) -> dict:
    """Write the dataset described by `work` (split -> items) under `root`; returns its meta.
    `skipped` lists (split, file, reason) known bad before any work, for the report."""
    return build_from(root, source=Listed(classes, work, skipped), params=params, produce=produce, size=size,
                      quality=quality, workers=workers, label=label, durable=durable)


@_one_writer
def build_from(root: Path, *, source, params: dict, produce: Callable[[Hashable], np.ndarray], size: int,
               quality: int, workers: int, label: str = "images", durable: bool = True) -> dict:
    """Write the dataset that `source` (a Listed, or a source of the same shape) describes
    under `root`, chunk by chunk as the source gives them; returns its meta. `params` are the
    settings that fix the stored images: a rerun with other params is refused. A chunk whose
    result a run before this one saved is not made again. durable=False skips the fsync of
    each image and chunk result (see `store`)."""
    root = Path(root)
    meta = check_destination(root, params)
    if meta is not None and meta.get("work") == source.identity:
        if not (root / CHECKSUMS).is_file():  # a set made before checksums.txt existed
            rels = [rel for s in SPLITS for rel, _ in open_dataset(root).split(s)]
            write_checksums(root / CHECKSUMS, checksum_files(root, rels))
        return meta
    (root / PARTIAL).mkdir(parents=True, exist_ok=True)
    atomic_write(root / PARTIAL / "params.json", json.dumps(params))
    (root / META).unlink(missing_ok=True)  # the source changed: the set is incomplete until rebuilt
    for folder in source.folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for folder in source.folders | {PARTIAL}:
        remove_stale_temps(root / folder)

    tag = json.dumps(params, sort_keys=True)
    progress = Progress(label, source.total)  # the rate counts this run's images only
    order: list[tuple[str, str]] = []  # (chunk name, split) of every chunk, in the source's order
    results: dict[str, dict] = {}

    def todo() -> Iterator[Chunk]:
        for split, items in source.chunks():
            c = Chunk(root, split, items, produce, size, quality, tag, durable)
            order.append((c.name, split))
            path = root / PARTIAL / c.name
            saved = _load_chunk(path) if path.is_file() else None
            if saved is None:
                yield c
            else:
                results[c.name] = saved
                progress.found_done(len(items))

    for c, result in _run(todo(), workers):
        results[c.name] = result
        progress.update(progress.done + len(c.items))
    progress.close()
    return _finish(root, params, source, order, results, size)


def _run(chunks: Iterator[Chunk], workers: int) -> Iterator[tuple[Chunk, dict]]:
    """(chunk, result) as each chunk is made: in this process with one worker, else by a pool
    that holds at most two chunks per worker not yet done, so that a streamed source is read
    only a little ahead of the work. On an error (the source's too: an archive cut short), the
    chunks not started are dropped and the running ones finish."""
    if workers <= 1:
        for c in chunks:
            yield c, run_chunk(c)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
        pending: dict = {}

        def finished():
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            return [(pending.pop(f), f.result()) for f in done]

        try:
            for c in chunks:
                while len(pending) >= 2 * workers:
                    yield from finished()
                pending[pool.submit(run_chunk, c)] = c
            while pending:
                yield from finished()
        except BaseException:
            for f in pending:
                f.cancel()
            raise


def _finish(root: Path, params: dict, source, order: list[tuple[str, str]], results: dict, size: int) -> dict:
    manifests: dict[str, list[tuple[str, int]]] = {s: [] for s in SPLITS}
    checksums: list[tuple[str, int, int]] = []
    bad = list(source.skipped)
    pix_sum = np.zeros((size, size, 3), np.int64)
    rgb_sum, rgb_outer = np.zeros(3, np.int64), np.zeros((3, 3), np.int64)
    for name, split in order:
        r = results[name]
        manifests[split] += [(str(p), int(l)) for p, l in zip(r["rel"], r["label"])]
        checksums += [(str(p), int(n), int(crc)) for p, n, crc in zip(r["rel"], r["size"], r["crc"])]
        bad += [(split, str(k), str(why)) for k, why in zip(r["bad_key"], r["bad_reason"])]
        if split == "train":
            pix_sum += r["pix_sum"].astype(np.int64)
            rgb_sum += r["rgb_sum"]
            rgb_outer += r["rgb_outer"]
    n = len(manifests["train"])
    if n == 0:
        raise DataError(f"no usable training image: all {len(bad)} file(s) were bad"
                        + "".join(f"; {k}: {why}" for _, k, why in bad[:3]))
    pixels = n * size * size
    mean_rgb = rgb_sum / pixels
    cov = rgb_outer / pixels - np.outer(mean_rgb, mean_rgb)
    eigvals, eigvecs = pca(cov)
    buf = io.BytesIO()
    np.savez(buf, mean=(pix_sum / n).astype(np.float32), cov=cov, eigvals=eigvals, eigvecs=eigvecs)
    atomic_write(root / STATS, buf.getvalue())
    atomic_write(root / CLASSES, "".join(f"{c}\n" for c in source.classes))
    for split, items in manifests.items():
        write_manifest(root / f"{split}.txt", sorted(items, key=lambda x: (x[1], x[0])))
    write_checksums(root / CHECKSUMS, checksums)
    atomic_write(root / REPORT, f"# {len(bad)} skipped file(s): split<TAB>file<TAB>reason\n"
                 + "".join(f"{s}\t{printable(k)}\t{printable(why)}\n" for s, k, why in sorted(bad)))
    meta = {"format": FORMAT, "image_size": size, "classes": len(source.classes), "train": n,
            "val": len(manifests["val"]), "skipped": len(bad), "work": source.identity, "params": params,
            **source.extra}
    atomic_write(root / META, json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(root / PARTIAL, ignore_errors=True)
    return meta
