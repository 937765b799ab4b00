"""`twocol prepare` from the ILSVRC archives against the same images extracted: images/s, CPU
time per image, and what that projects for ILSVRC-2012 (1,331,167 images) on 16 cores.

    python -m bench.prepare_archives                     # 10 classes x 100 + 200 val images
    python -m bench.prepare_archives --classes 20 --per-class 150 --workers 2

Builds the three ILSVRC-2012 files in their official layout (an outer tar of per-class tars, a
flat validation tar, the devkit with a meta.mat in the real struct layout) from photo-like
images of about 500x375 pixels and 110 KB (a smooth scene, texture and sensor noise: what makes
ImageNet's JPEGs that size), extracts the same images to a tree (plus the labels file prepare
takes for a flat val folder), then times `prepare` of each into 256-px sets, the two taking
turns. Also times the archive walk alone (tar parsing and MD5 in one process: the part that
does not run in parallel), which bounds the rate whatever the cores. Writes JSON to
bench/results/<date>-prepare-archives-cpu.json.

The builders (tar_bytes, meta_mat, devkit_tar, write_release) are also what the tests build
their small archives with.
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from bench.data import cpu_seconds
from bench.env import environment
from bench.record import Record
from twocol.data.build import worker_count
from twocol.data.prepare import prepare
from twocol.data.tarstream import TarStream

ILSVRC2012_IMAGES = 1_281_167 + 50_000
SYNSET_FIELDS = ("ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height", "num_train_images")


def tar_bytes(members, gzip: bool = False) -> bytes:
    """A tar archive of `members`: (name, bytes) pairs, or TarInfo objects (links, folders,
    odd names) with (TarInfo, bytes or None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gzip else "w", format=tarfile.GNU_FORMAT) as tar:
        for m in members:
            info, data = (m if isinstance(m[0], tarfile.TarInfo) else (tarfile.TarInfo(m[0]), m[1]))
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def synsets_for(wnids: list[str], train_counts: dict[str, int], seed: int = 0) -> list[dict]:
    """A synset table as the devkit's: the leaves (one per WNID) get IDs 1..K in a shuffled order
    (not the WNIDs' order), then two non-leaf synsets (IDs K+1, K+2) that hold them."""
    order = np.random.default_rng(seed).permutation(len(wnids))
    leaves = [{"ID": i + 1, "WNID": wnids[j], "children": [], "num_train_images": train_counts.get(wnids[j], 0)}
              for i, j in enumerate(order)]
    k = len(leaves)
    half = [s["ID"] for s in leaves[: k // 2]]
    return leaves + [{"ID": k + 1, "WNID": "n00001740", "children": [k + 2] + half, "num_train_images": 0},
                     {"ID": k + 2, "WNID": "n00002137", "children": [s["ID"] for s in leaves[k // 2:]],
                      "num_train_images": 0}]


def meta_mat(synsets: list[dict], release: str = "ILSVRC2012") -> bytes:
    """meta.mat as the devkit holds it: a struct array `synsets` (N x 1) with the fields
    <release>_ID, WNID, words, gloss, num_children, children, wordnet_height, num_train_images."""
    names = [f"{release}_ID" if f == "ID" else f for f in SYNSET_FIELDS]
    table = np.empty((len(synsets), 1), dtype=[(n, object) for n in names])
    for i, s in enumerate(synsets):
        children = np.array([s["children"]], dtype=np.float64).reshape(1, -1)
        table[i, 0] = (np.float64(s["ID"]), s["WNID"], f"words of {s['WNID']}", f"gloss of {s['WNID']}",
                       np.float64(len(s["children"])), children, np.float64(0 if not s["children"] else 2),
                       np.float64(s["num_train_images"]))
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": table})
    return buf.getvalue()


def devkit_tar(meta: bytes, truth: list[int], release: str = "ILSVRC2012", top: str = "ILSVRC2012_devkit_t12") -> bytes:
    """The devkit .tar.gz: <top>/data/meta.mat and <top>/data/<release>_validation_ground_truth.txt."""
    text = "".join(f"{i}\n" for i in truth).encode()
    return tar_bytes([(f"{top}/readme.txt", b"development kit\n"), (f"{top}/data/meta.mat", meta),
                      (f"{top}/data/{release}_validation_ground_truth.txt", text)], gzip=True)


def write_release(folder: Path, train: dict[str, list[tuple[str, bytes]]], val: list[tuple[str, bytes, str]],
                  seed: int = 0) -> list[dict]:
    """The three ILSVRC-2012 files in `folder`: `train` maps a WNID to its images (name, bytes),
    `val` lists (name, bytes, WNID) in any order. Returns the synset table."""
    folder.mkdir(parents=True, exist_ok=True)
    synsets = synsets_for(sorted(train), {w: len(v) for w, v in train.items()}, seed)
    ident = {s["WNID"]: s["ID"] for s in synsets}
    (folder / "ILSVRC2012_img_train.tar").write_bytes(
        tar_bytes([(f"{w}.tar", tar_bytes(images)) for w, images in train.items()]))
    (folder / "ILSVRC2012_img_val.tar").write_bytes(tar_bytes([(n, data) for n, data, _ in val]))
    truth = [ident[w] for _, _, w in sorted(val)]
    (folder / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(devkit_tar(meta_mat(synsets), truth))
    return synsets


def photo(rng: np.random.Generator, width: int = 500, height: int = 375) -> np.ndarray:
    """A photo-like RGB image: a smooth scene of a few colours, edges, texture at several
    scales and sensor noise, so that JPEG at quality 90 spends about what it spends on a photo."""
    def field(scale):
        small = rng.normal(0, 1, (height // scale + 2, width // scale + 2, 3)).astype(np.float32)
        img = Image.fromarray(np.uint8(np.clip(small * 40 + 128, 0, 255)))
        return np.asarray(img.resize((width, height), Image.BICUBIC), np.float32) - 128

    scene = 128 + 1.6 * field(60) + 0.8 * field(12) + 1.0 * field(3)
    noise = rng.normal(0, 9, (height, width, 1)).astype(np.float32)  # in the luminance, as a sensor's
    return np.uint8(np.clip(scene + noise, 0, 255))


def jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def make_images(classes: int, per_class: int, val: int, seed: int):
    """(train: WNID -> [(name, bytes)], val: [(name, bytes, WNID)]) of photo-like JPEGs. A few
    hundred distinct images are drawn and reused (drawing each costs more than preparing it)."""
    rng = np.random.default_rng(seed)
    pool = [jpeg(photo(rng)) for _ in range(min(200, classes * per_class + val))]
    wnids = [f"n{1440764 + 7919 * c:08d}" for c in range(classes)]
    train = {w: [(f"{w}_{i + 1}.JPEG", pool[(c * per_class + i) % len(pool)]) for i in range(per_class)]
             for c, w in enumerate(wnids)}
    vals = [(f"ILSVRC2012_val_{i + 1:08d}.JPEG", pool[(i * 7) % len(pool)], wnids[i % classes]) for i in range(val)]
    return train, vals


def write_tree(folder: Path, train, val) -> Path:
    """The same images extracted: folder/train/<wnid>/, a flat folder/val/ and folder/val_labels.txt."""
    for w, images in train.items():
        (folder / "train" / w).mkdir(parents=True)
        for name, data in images:
            (folder / "train" / w / name).write_bytes(data)
    (folder / "val").mkdir()
    for name, data, _ in val:
        (folder / "val" / name).write_bytes(data)
    (folder / "val_labels.txt").write_text("".join(f"{n} {w}\n" for n, _, w in val))
    return folder / "val_labels.txt"


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its reaped children) of fn()."""
    start, cpu = time.perf_counter(), cpu_seconds()
    fn()
    return time.perf_counter() - start, cpu_seconds() - cpu


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--val", type=int, default=200)
    p.add_argument("--workers", type=int, default=None, help="prepare's --workers (default: every CPU)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    load_start = os.getloadavg()
    scratch = Path(tempfile.mkdtemp(prefix="prepare-archives-", dir=args.dir))
    try:
        train, val = make_images(args.classes, args.per_class, args.val, args.seed)
        sizes = [len(d) for images in train.values() for _, d in images] + [len(d) for _, d, _ in val]
        write_release(scratch / "archives", train, val, args.seed)
        labels = write_tree(scratch / "tree", train, val)
        n = len(sizes)
        runs = {"archives": (scratch / "archives", None), "tree": (scratch / "tree", labels)}
        walls, cpus = {k: [] for k in runs}, {k: [] for k in runs}
        stored = 0
        for r in range(args.repeats):
            for kind in (("archives", "tree") if r % 2 == 0 else ("tree", "archives")):
                src, val_labels = runs[kind]
                dst = scratch / f"out-{kind}-{r}"
                wall, cpu = timed(lambda: prepare(src, dst, size=args.size, workers=args.workers,
                                                  val_labels=val_labels))
                walls[kind].append(wall)
                cpus[kind].append(cpu)
                stored = sum(f.stat().st_size for f in dst.rglob("*.jpg"))
                print(f"repeat {r + 1}/{args.repeats} {kind}: {n / wall:.1f} images/s, "
                      f"{1e3 * cpu / n:.1f} CPU-ms/image", file=sys.stderr)
                shutil.rmtree(dst)
        tar = scratch / "archives" / "ILSVRC2012_img_train.tar"

        def walk():
            with TarStream(tar) as t:
                for _ in t.walk(nest=lambda name: name.endswith(".tar")):
                    pass
                t.md5()

        walk_wall = statistics.median(timed(walk)[0] for _ in range(args.repeats))
        walk_rate = tar.stat().st_size / walk_wall  # bytes/s
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    workers = worker_count(args.workers)
    mean_bytes = sum(sizes) / n
    med = {k: {"images_per_s": n / statistics.median(walls[k]), "cpu_ms_per_image": 1e3 * statistics.median(cpus[k]) / n}
           for k in runs}
    a = med["archives"]
    # 16 cores: each image's CPU time spread over 16 processes, unless the one walk is slower.
    per_core = 1e3 / a["cpu_ms_per_image"]
    rate16 = min(16 * per_core, walk_rate / mean_bytes)
    env = environment()
    result = {
        "load_average_start": load_start,
        "load_average": os.getloadavg(), "workers": workers,
        "images": n, "classes": args.classes, "image_bytes_mean": mean_bytes, "size": args.size,
        "repeats": args.repeats, "median": med, "walk_bytes_per_s": walk_rate,
        "stored_bytes_per_image": stored / n,
        "projection_16_cores": {"images": ILSVRC2012_IMAGES, "images_per_s": rate16,
                                "hours": ILSVRC2012_IMAGES / rate16 / 3600,
                                "stored_gb": stored / n * ILSVRC2012_IMAGES / 1e9},
        "what": "twocol prepare of the same images from the ILSVRC-2012 archives and from the extracted tree "
                "(flat val with a labels file), medians; CPU time of the process and its workers"}
    out = args.out or Path("bench/results") / f"{env['date']}-prepare-archives-cpu.json"
    Record(out, "prepare_archives", env=env, **result)
    print(f"{n} images of {mean_bytes / 1e3:.0f} KB mean, {workers} workers, {env['cpu']}, "
          f"load average {load_start[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    for k, v in med.items():
        print(f"  prepare from {k:<9} {v['images_per_s']:7.1f} images/s  {v['cpu_ms_per_image']:6.1f} CPU-ms/image")
    print(f"  archive walk + MD5 alone: {walk_rate / 1e6:.0f} MB/s ({walk_rate / mean_bytes:.0f} images/s)")
    print(f"  stored {args.size}-px set: {stored / n / 1e3:.1f} KB/image -> "
          f"{result['projection_16_cores']['stored_gb']:.0f} GB for {ILSVRC2012_IMAGES:,} images")
    print(f"  projected on 16 cores: {rate16:.0f} images/s, {ILSVRC2012_IMAGES / rate16 / 60:.0f} min for "
          f"{ILSVRC2012_IMAGES:,} images")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
