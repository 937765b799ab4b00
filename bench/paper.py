"""The paper's comparisons, rerun: two-column net vs the one-GPU comparison net (the 1.7% top-1 /
1.2% top-5 claim), and the ablations (LRN, overlapping pooling, ReLU vs tanh, PCA lighting).

    python bench/paper.py                       # CPU-sized: small configs, synthetic data, 3 seeds
    python bench/paper.py --data DIR --config configs/alexnet_paper.yaml --onecol configs/alexnet_onecol.yaml --gpus 0,1

Every net is trained with the same recipe, data, epochs and seeds, then evaluated with the
10-patch test. Results go to bench/results/<date>-paper.json and a chart; bench/report.py
turns them into bench/results/latest.md.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import sys
import time
from pathlib import Path

from env import environment
from twocol.checkpoint import load_net
from twocol.config import load_config
from twocol.data import make_loader
from twocol.devices import Placement
from twocol.evaluate import evaluate
from twocol.train import resolve_data, train

PAPER = {"twocol": {"top1": 37.47, "top5": 17.00}, "onecol": {"top1": 39.17, "top5": 18.23},
         "source": "2012 logs, ILSVRC-2010, multiview (DESIGN.md)"}

# name -> (overrides on the two-column config, the paper's claim)
ABLATIONS = {
    "lrn_off": (["model.lrn.enabled=false"], "LRN lowers error by 1.4% top-1, 1.2% top-5"),
    "pool_2x2": (["model.pool.kernel=2"], "overlapping pooling lowers error by 0.4% top-1, 0.3% top-5"),
    "tanh": (["model.activation=tanh"], "ReLU reaches 25% training error 6x sooner than tanh (CIFAR-10)"),
    "lighting_off": (["data.lighting_std=0"], "PCA lighting lowers top-1 error by over 1%"),
}


def train_and_test(cfg_path, overrides, seed, data, placement, runs: Path, tag: str) -> dict:
    cfg = load_config(cfg_path, [*overrides, f"train.seed={seed}"])
    run_dir = runs / f"{tag}-seed{seed}"
    if run_dir.exists():
        for f in run_dir.iterdir():
            f.unlink()
    t = time.perf_counter()
    train(cfg, placement, data, run_dir, stream=io.StringIO())
    seconds = time.perf_counter() - t
    net, _, _ = load_net(run_dir / "checkpoint.pt", placement, cfg)
    ten = evaluate([net], make_loader(cfg, data, "val", placement, train=False, ten_crop=True).epoch(0))
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    result = {"tag": tag, "seed": seed, "seconds": seconds, "top1": 100 * ten["top1_error"],
              "top5": 100 * ten["top5_error"], "centre_top1": 100 * epochs[-1]["val_top1_error"],
              "train_top1_by_epoch": [100 * r["train_top1_error"] for r in epochs]}
    print(f"  {tag:<14} seed {seed}: 10-patch top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
          f"({seconds:.0f} s)", flush=True)
    return result


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of a 95% t interval (0 with one value)."""
    t95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}
    m = statistics.mean(values)
    if len(values) < 2:
        return m, 0.0
    return m, t95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))


def epochs_to(train_errors: list[float], threshold: float) -> int | None:
    return next((i + 1 for i, e in enumerate(train_errors) if e <= threshold), None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/small_twocol.yaml", help="the two-column net")
    p.add_argument("--onecol", default="configs/small_onecol.yaml", help="the one-column comparison net")
    p.add_argument("--data", help="prepared dataset (default: the built-in synthetic set)")
    p.add_argument("--gpus", default=None)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs for every run")
    p.add_argument("--threshold", type=float, default=None,
                   help="training top-1 error (%%) for the ReLU/tanh epochs-to comparison "
                        "(default: halfway between chance and the ReLU net's final training error)")
    p.add_argument("--no-ablations", action="store_true")
    p.add_argument("--runs", type=Path, default=Path("runs/bench"))
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)

    placement = Placement.parse(a.gpus)
    common = [f"train.epochs={a.epochs}"] if a.epochs else []
    cfg = load_config(a.config, common)
    data = resolve_data(cfg, a.data)
    print(f"paper protocol: {cfg.name} vs {Path(a.onecol).stem}, {a.seeds} seeds, {cfg.train.epochs} epochs, "
          f"data {data}, {placement}", flush=True)
    runs = {"twocol": [], "onecol": []}
    for seed in range(a.seeds):
        runs["twocol"].append(train_and_test(a.config, common, seed, data, placement, a.runs, "twocol"))
        runs["onecol"].append(train_and_test(a.onecol, common, seed, data, placement, a.runs, "onecol"))
    comparison = {}
    for k in ("top1", "top5"):
        diffs = [o[k] - t[k] for t, o in zip(runs["twocol"], runs["onecol"])]
        comparison[k] = {"twocol": mean_ci([r[k] for r in runs["twocol"]]),
                         "onecol": mean_ci([r[k] for r in runs["onecol"]]),
                         "onecol_minus_twocol": mean_ci(diffs),
                         "paper_onecol_minus_twocol": PAPER["onecol"][k] - PAPER["twocol"][k]}
    ablations = {}
    if not a.no_ablations:
        base = runs["twocol"][0]
        for name, (overrides, claim) in ABLATIONS.items():
            r = train_and_test(a.config, common + overrides, 0, data, placement, a.runs, name)
            ablations[name] = {"claim": claim, "run": r, "top1_minus_baseline": r["top1"] - base["top1"],
                               "top5_minus_baseline": r["top5"] - base["top5"]}
        relu, tanh = base["train_top1_by_epoch"], ablations["tanh"]["run"]["train_top1_by_epoch"]
        chance = 100 * (1 - 1 / cfg.model.num_classes)
        threshold = a.threshold if a.threshold is not None else (chance + relu[-1]) / 2
        ablations["tanh"]["epochs_to_threshold"] = {"threshold": threshold, "relu": epochs_to(relu, threshold),
                                                    "tanh": epochs_to(tanh, threshold)}
    result = {"benchmark": "paper", "config": cfg.name, "onecol_config": Path(a.onecol).stem,
              "data": str(data), "epochs": cfg.train.epochs, "seeds": a.seeds, "placement": str(placement),
              "environment": environment(), "paper": PAPER, "runs": runs, "comparison": comparison,
              "ablations": ablations}
    out = a.out or Path("bench/results") / f"{result['environment']['date']}-paper.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
