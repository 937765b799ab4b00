"""End-to-end training throughput from JPEG files: how many images per second reach the net and
train it, with each way of feeding it, and how much of the step is spent waiting for data.

    python -m bench.e2e                 # GPU if there is one (the paper net), else the CPU preset
    python -m bench.e2e --gpus cpu --steps 20

The data: JPEGs stored like ImageNet (256x256, one folder per class, `twocol synth`'s layout),
10 classes x 1,000 training images by default, made once with every core and cached under
data/. Each file is one of VARIANTS views of a scene drawn by the synthetic generator at 256 px
(shifted, turned, mirrored, with its own sensor noise), written without fsyncs (a throwaway
set). Drawing a scene takes about 27 ms of a core and the rest of a file about 7 ms; one scene
and two fsyncs per file (`twocol synth`) made 21 files/s on 2 cores, which is about a minute
for 10,000 files on 16, the whole time bench/gpu_check.sh gives this bench; this way it makes
190 files/s on 2 cores, 10,000 files in some 7-10 s on 16. The nets:

  gpu  configs/alexnet_paper.yaml, batch 128, both columns on one GPU (each on its own stream)
  cpu  configs/small_twocol.yaml at the paper's geometry (256 px stored, 224 crops, conv1 stride
       4; widths /4), batch 128: the paper net takes seconds per step on a few cores, this one a
       fraction of that, so the loaders have something to keep up with
  tiny configs/tiny_twocol.yaml on 40 px crops (--preset tiny): a dry run's, checking that
       every feed runs, not how fast

The feeds, each for --steps steps after --warmup:

  synthetic  one random batch already on the device, reused: the ceiling
  dali-gpu   DALI decoding on the GPU ("mixed", nvJPEG); GPU only
  dali-cpu   DALI decoding on the CPU (data.decoder=cpu; on a GPU machine the uint8 crops are
             copied to the GPU and normalised there, as training does)
  torch      torch DataLoader workers decoding with Pillow

A step is training's own (twocol.step.train_step: forward, cross entropy, backward, the
paper's update). Each row: images/s over the timed steps, and data_wait_fraction, the share of
that wall time the host spent waiting for the next batch. Writes
bench/results/<date>-e2e-<cpu|gpu-name>.json (or --out) before the JPEG set is made (every feed
under not_reached), once it is made and after each feed, so that a run cut short keeps the rows
it measured and lists the feeds it did not reach.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import math
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.env import environment
from bench.record import Record
from bench.targets import E2E_GPU
from twocol.config import load_config
from twocol.data.build import Item, build
from twocol.data.layout import open_dataset
from twocol.data.loader import dali_problem, make_loader
from twocol.data.synth import GENERATOR, QUALITY, class_names, render
from twocol.devices import Placement
from twocol.inputs import ColumnInputs
from twocol.model import build_model
from twocol.optim import make_optimizer
from twocol.step import train_step

PRESETS = {
    # The batch is --batch's (default 128, the paper's), given with the workers below.
    "gpu": ("configs/alexnet_paper.yaml", []),
    "cpu": ("configs/small_twocol.yaml", ["data.image_size=256", "model.input_size=224", "model.conv1.stride=4"]),
    # A dry run's (bench/gpu_check.sh --dry-run): the tiny net on 40 px crops of the stored files.
    "tiny": ("configs/tiny_twocol.yaml", ["data.image_size=256"]),
}
FEEDS = ("synthetic", "dali-gpu", "dali-cpu", "torch")


CLASSES, SIDE = 10, 256
VARIANTS = 8  # files drawn from each scene
SET_VERSION = 1  # raised whenever view() draws other files from the same scenes


@functools.lru_cache(maxsize=4)
def scene(split: str, label: int, index: int) -> np.ndarray:
    """One scene of the synthetic generator at 256 px, drawn once per worker process (a chunk of
    work holds consecutive images, so the VARIANTS views of a scene are made together)."""
    return render((split, label, index), seed=0, size=SIDE, classes=CLASSES)


def view(spec: tuple[str, int, int]) -> np.ndarray:
    """File (split, label, i): view i % VARIANTS of scene i // VARIANTS, shifted by up to 32
    pixels (wrapping), turned by a multiple of 90 degrees, mirrored or not, with its own
    sensor noise (uniform, +-6 levels): every file differs, and decodes like a photo-like JPEG."""
    split, label, i = spec
    img = scene(split, label, i // VARIANTS)
    if i % VARIANTS:
        rng = np.random.default_rng([SET_VERSION, split == "val", label, i])
        dy, dx = rng.integers(-32, 33, 2)
        img = np.rot90(np.roll(img, (int(dy), int(dx)), (0, 1)), int(rng.integers(4)))
        if rng.random() < 0.5:
            img = img[:, ::-1]
        noise = rng.integers(-6, 7, img.shape, dtype=np.int16)
        img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def dataset_root(data_dir: Path, images: int) -> Path:
    """Where dataset() keeps the set with `images` training images."""
    return data_dir / f"e2e-v{SET_VERSION}-synth-v{GENERATOR}-{CLASSES}x{math.ceil(images / CLASSES)}-{SIDE}px"


def dataset(data_dir: Path, images: int, workers: int) -> Path:
    """The 256 px JPEG set with `images` training images (rounded up to 10 classes), made once
    (resumably, without fsyncs) with `workers` processes."""
    per_class = math.ceil(images / CLASSES)
    root = dataset_root(data_dir, images)
    names = class_names(CLASSES)
    work = {split: [Item((split, label, i), f"{split}/{names[label]}/{split}-{label:02d}-{i:05d}.jpg", label)
                    for label in range(CLASSES) for i in range(n)]
            for split, n in (("train", per_class), ("val", 1))}
    params = {"kind": "e2e", "set": SET_VERSION, "generator": GENERATOR, "classes": CLASSES, "per_class": per_class,
              "variants": VARIANTS, "seed": 0, "image_size": SIDE, "quality": QUALITY}
    build(root, params=params, classes=names, work=work, produce=view, size=SIDE, quality=QUALITY,
          workers=workers, label=f"e2e images {root}", durable=False)
    return root


def feed(step, batch, device: torch.device) -> None:
    """Hand one batch from a loader to the net: the only place that knows what a batch is. A
    loader's ColumnInputs are on the columns' device already (the copies are no-ops then)."""
    images, labels = batch
    if isinstance(images, ColumnInputs):
        images = images.map(lambda t: t.to(device, non_blocking=True))
    else:
        images = images.to(device, non_blocking=True)
    step(images, labels.to(device, non_blocking=True))


def endless(loader):
    """The loader's batches, epoch after epoch (an epoch without a batch would loop forever)."""
    if len(loader) == 0:
        raise ValueError(f"{len(loader.files)} images make no batch of {loader.batch_size}")
    for epoch in itertools.count():
        yield from loader.epoch(epoch)


def measure(batches, step, device: torch.device, steps: int, warmup: int, sync) -> dict:
    """Images/s and the share of the wall time spent in next(batches), over `steps` steps."""
    it = iter(batches)
    for _ in range(warmup):
        feed(step, next(it), device)
    sync()
    waited, images = 0.0, 0
    start = time.perf_counter()
    for _ in range(steps):
        t = time.perf_counter()
        batch = next(it)
        waited += time.perf_counter() - t
        images += batch[1].shape[0]
        feed(step, batch, device)
    sync()
    wall = time.perf_counter() - start
    return {"images_per_s": images / wall, "data_wait_fraction": waited / wall, "wall_s": wall, "images": images}


def trainer(cfg, placement: Placement, net=None):
    """One training step of cfg's net (a fresh one, seed 0, unless `net` is given) on
    placement: training's own (twocol.step)."""
    if net is None:
        net = build_model(cfg, placement, seed=0)
        net.use_streams(placement.a.type == "cuda")
    net.train()
    opt = make_optimizer(net, cfg.optim)

    def step(images, labels):
        train_step(net, opt, images, labels, cfg.train.amp, placement.a)
    return step


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpus", default=None, help="'cpu' or a GPU id for both columns (default: 0 with CUDA, else cpu)")
    p.add_argument("--images", type=int, default=10_000, help="training images in the JPEG set (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per feed (default: 50 on a GPU, 20 on the CPU)")
    p.add_argument("--warmup", type=int, default=None, help="steps before timing (default: 5 on a GPU, 2 on the CPU)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="DALI threads / DataLoader processes (default: every core, %(default)s)")
    p.add_argument("--feeds", default=",".join(FEEDS), help="comma-separated (default: %(default)s)")
    p.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="the net (default: gpu with a GPU, else cpu; tiny: a dry run's)")
    p.add_argument("--batch", type=int, default=128, help="images per step (default: %(default)s)")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    spec = args.gpus or ("0" if torch.cuda.is_available() else "cpu")
    placement = Placement.parse(spec)
    if placement.a != placement.b:
        p.error("the end-to-end bench puts both columns on one device: --gpus cpu or one GPU id")
    gpu = placement.a.type == "cuda"
    preset = args.preset or ("gpu" if gpu else "cpu")
    config, overrides = PRESETS[preset]
    overrides = overrides + [f"data.workers={args.workers}", f"data.batch_size={args.batch}"]
    cfg = load_config(config, overrides)
    steps = args.steps or (50 if gpu else 20)
    warmup = args.warmup if args.warmup is not None else (5 if gpu else 2)
    names = [f for f in args.feeds.split(",") if f]
    for name in names:
        if name not in FEEDS:
            p.error(f"unknown feed {name}; choose from {', '.join(FEEDS)}")
    load_start = os.getloadavg()
    device = placement.a
    env = environment()
    machine = {"cpu": env["cpu"], "cores": os.cpu_count(), "gpu": env["gpu"], "platform": platform.platform(),
               "python": platform.python_version()}
    kind = f"gpu-{slug(env['gpu'])}" if gpu else "cpu"
    out = args.out or Path("bench/results") / f"{env['date']}-e2e-{kind}.json"
    # train_images and made_s stay null until the set is made.
    data = {"path": str(dataset_root(args.data_dir, args.images)), "train_images": None, "image_size": SIDE,
            "crop": cfg.model.input_size, "made_s": None, "variants_per_scene": VARIANTS}

    def derive(record: dict) -> dict:
        """Each row over the synthetic ceiling; whether the GPU target is met, where measured."""
        rows = record["rows"]
        ceiling = next((r["images_per_s"] for r in rows if r["feed"] == "synthetic" and "images_per_s" in r), None)
        for r in rows:
            if ceiling and "images_per_s" in r:
                r["over_synthetic"] = r["images_per_s"] / ceiling
        dali = next((r for r in rows if r["feed"] == "dali-gpu" and "over_synthetic" in r), None)
        return {"load_average": [load_start[0], os.getloadavg()[0]], "complete": not record["not_reached"],
                "met": {} if dali is None else
                {"dali_gpu_over_synthetic": dali["over_synthetic"] >= E2E_GPU["dali_gpu_over_synthetic"]}}

    def sync():
        if gpu:
            torch.cuda.synchronize(device)

    # The plan, before the set is made: a run cut short says what it did not reach.
    rec = Record(out, "e2e", planned=list(names), targets=E2E_GPU, env=env, derive=derive, machine=machine,
                 preset=preset, config=config, overrides=overrides, data=data, batch=cfg.data.batch_size,
                 steps=steps, warmup=warmup, torch_threads=torch.get_num_threads())
    t = time.perf_counter()
    root = dataset(args.data_dir, args.images, os.cpu_count() or 1)
    data.update(train_images=open_dataset(root).meta["train"], made_s=time.perf_counter() - t)
    rec.write()
    print(f"dataset {root}: {data['train_images']} training images ({data['made_s']:.1f} s, "
          "made once, then reused)", file=sys.stderr)
    for name in names:
        row = {"feed": name, "device": str(device), "cpu_workers": 0 if name == "synthetic" else args.workers}
        why_not = None
        if name == "dali-gpu":
            why_not = "needs a GPU" if not gpu else dali_problem(str(device))
        elif name == "dali-cpu":
            why_not = dali_problem("cpu")
        if why_not:
            row["skipped"] = why_not
            rec.put(name, row)
            rec.write()
            print(f"{name:<10} skipped: {why_not}", flush=True)
            continue
        step = trainer(cfg, placement)
        if name == "synthetic":
            gen = torch.Generator().manual_seed(0)
            side = cfg.model.input_size
            x = torch.randn(cfg.data.batch_size, 3, side, side, generator=gen).to(device)
            y = torch.randint(0, 10, (cfg.data.batch_size,), generator=gen).to(device)
            batches = itertools.repeat((x, y))
            row["decode"] = "none (one batch on the device)"
        else:
            backend = "dali" if name.startswith("dali") else "torch"
            # The loader as training runs it on this placement: DALI decoding on column A's GPU
            # (mixed) or on the host (cpu), the uint8 crops then normalised on the columns' device.
            decoder = {"dali-gpu": "mixed", "dali-cpu": "cpu"}.get(name)
            feed_cfg = load_config(config, overrides + [f"data.decoder={decoder}"]) if decoder else cfg
            batches = endless(make_loader(feed_cfg, root, "train", placement, train=True, backend=backend))
            row["decode"] = {"dali-gpu": "GPU (DALI mixed, nvJPEG)", "dali-cpu": "CPU (DALI, libjpeg-turbo)",
                             "torch": "CPU (Pillow in DataLoader workers)"}[name]
            if name != "dali-gpu" and gpu:
                row["decode"] += "; uint8 crops copied to the GPU (pinned) and normalised there"
        row.update(measure(batches, step, device, steps, warmup, sync))
        rec.put(name, row)
        print(f"{name:<10} {row['images_per_s']:9.1f} img/s  waiting for data {100 * row['data_wait_fraction']:5.1f}% "
              f"of the time  ({row['decode']})", flush=True)
        del batches, step
        rec.write()
    print(f"{preset} preset ({config}, batch {cfg.data.batch_size}), {steps} steps per feed after {warmup}; "
          f"load average {load_start[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
