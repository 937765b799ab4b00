"""Data-loader throughput: the DALI pipeline against the torch + Pillow fallback, on the same
prepared sets, in one process.

    python -m bench.data                      # 72px -> 64 (small configs) and 256px -> 224 (paper)
    python -m bench.data --sets 256:224 --repeats 7 --gpus 0

Each repeat times one whole training epoch (decode, random crop, flip, mean image, PCA
lighting, scale; the loader's start-up included, as every epoch pays it) of each backend, the
backends taking turns so that a noisy machine slows both alike. Reports the median images/s of
each and their ratio, and the CPU time each spent per image (this process, its threads and its
worker processes), which a busy machine disturbs less than the rate; writes JSON to
bench/results/<date>-data-<cpu|gpu>.json.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

from bench.env import environment
from bench.record import Record
from bench.targets import DATA_CPU
from twocol.config import load_config
from twocol.data.layout import open_dataset
from twocol.data.loader import dali_problem, make_loader
from twocol.data.synth import GENERATOR, synthesize
from twocol.devices import Placement


def dataset(stored: int, images: int, data_dir: Path) -> Path:
    """The synthetic set at `stored` px with `images` training images, made once under data/."""
    per_class = -(-images // 10)
    root = data_dir / f"bench-synth-v{GENERATOR}-10x{per_class}-{stored}px"
    synthesize(root, classes=10, per_class=per_class, image_size=stored, val_per_class=1)
    return root


def cpu_seconds() -> float:
    # Children count once reaped: the torch loader's workers are, when its epoch ends.
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def epoch_rate(loader, epoch: int, sync) -> tuple[float, float]:
    """Images per second and CPU milliseconds per image of one epoch."""
    start, cpu = time.perf_counter(), cpu_seconds()
    n = 0
    for images, labels in loader.epoch(epoch):
        n += labels.shape[0]
    sync()
    return n / (time.perf_counter() - start), 1e3 * (cpu_seconds() - cpu) / n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="72:64,256:224", help="stored:crop pairs (default: %(default)s)")
    p.add_argument("--images", type=int, default=5000, help="training images per set (default: %(default)s)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="DALI threads / DataLoader processes (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--gpus", default="cpu", help="'cpu' or a GPU id for column A (default: %(default)s)")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    placement = Placement.parse(args.gpus)
    device = str(placement.a)
    if dali_problem(device) is not None:
        print(f"bench/data.py: {dali_problem(device)}", file=sys.stderr)
        return 2

    def sync():
        if placement.a.type == "cuda":
            import torch
            torch.cuda.synchronize(placement.a)

    kind = "gpu" if placement.a.type == "cuda" else "cpu"
    env = environment()
    out = args.out or Path("bench/results") / f"{env['date']}-data-{kind}.json"
    pairs = [tuple(int(v) for v in pair.split(":")) for pair in args.sets.split(",")]

    def derive(data: dict) -> dict:
        return {"load_average": os.getloadavg(),
                "met": {r["set"]: r["dali_over_torch"] >= DATA_CPU["dali_over_torch"] for r in data["rows"]}
                if kind == "cpu" else {}}

    # The plan before the first set: a run cut short says what it did not reach.
    rec = Record(out, "data", planned=[f"{s} -> {c}" for s, c in pairs], targets=DATA_CPU if kind == "cpu" else {},
                 env=env, derive=derive, device=device, batch=args.batch, workers=args.workers,
                 repeats=args.repeats, what="one training epoch per repeat: decode, random crop, flip, mean image, "
                                            "PCA lighting, scale; loader start-up included")
    for stored, crop in pairs:
        root = dataset(stored, args.images, args.data_dir)
        cfg = load_config("configs/small_twocol.yaml", [
            f"data.image_size={stored}", f"model.input_size={crop}", f"data.batch_size={args.batch}",
            f"data.workers={args.workers}"])
        loaders = {b: make_loader(cfg, root, "train", placement, train=True, backend=b) for b in ("dali", "torch")}
        for ld in loaders.values():  # warm the page cache and the imports
            epoch_rate(ld, 0, sync)
        rates, cpu_ms = {b: [] for b in loaders}, {b: [] for b in loaders}
        for r in range(args.repeats):
            for b in (("dali", "torch") if r % 2 == 0 else ("torch", "dali")):
                rate, ms = epoch_rate(loaders[b], r + 1, sync)
                rates[b].append(rate)
                cpu_ms[b].append(ms)
                print(f"{stored}->{crop} repeat {r + 1}/{args.repeats} {b}: {rate:.0f} img/s, {ms:.3f} CPU-ms/image",
                      file=sys.stderr)
        med = {b: statistics.median(v) for b, v in rates.items()}
        med_ms = {b: statistics.median(v) for b, v in cpu_ms.items()}
        key = f"{stored} -> {crop}"
        rec.put(key, {"set": key, "stored": stored, "crop": crop, "train_images": open_dataset(root).meta["train"],
                      "images_per_epoch": loaders["dali"].num_images, "rates": rates, "median": med,
                      "dali_over_torch": med["dali"] / med["torch"], "cpu_ms_per_image": cpu_ms,
                      "median_cpu_ms_per_image": med_ms})
        rec.write()
    results = rec["rows"]
    print(f"medians of {args.repeats} epochs, {device}, {args.workers} workers, batch {args.batch}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'set':<10}{'DALI img/s':>12}{'torch img/s':>13}{'DALI/torch':>12}{'DALI CPU-ms/img':>17}{'torch CPU-ms/img':>18}")
    for r in results:
        ms = r["median_cpu_ms_per_image"]
        print(f"{str(r['stored']) + '->' + str(r['crop']):<10}{r['median']['dali']:>12.0f}{r['median']['torch']:>13.0f}"
              f"{r['dali_over_torch']:>12.2f}{ms['dali']:>17.3f}{ms['torch']:>18.3f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
