"""One training of a bench protocol and its tests, in its own run directory: from scratch, or
continued bit for bit from the checkpoint an interrupted sitting left, or, when it already
finished, its result as written then. The result (result.json beside the run) is written the
moment it is known, so that an interrupted bench loses at most the epoch in progress of the
trainings it was running."""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from twocol.atomic import atomic_write
from twocol.checkpoint import checkpoint_config, load_checkpoint, load_net
from twocol.config import load_config
from twocol.data.loader import make_loader
from twocol.devices import Placement
from twocol.errors import TwocolError
from twocol.evaluate import evaluate
from twocol.monitor import read_metrics
from twocol.train import train

RESULT = "result.json"
LOG = "bench.log"  # what the training's process prints (bench/parallel.py)
# The 10-patch softmax of every validation image and its label, in the loader's order.
PREDICTIONS = "val_predictions.npz"


@dataclass(frozen=True)
class Training:
    tag: str                     # twocol, onecol, an ablation's name, dropout_on / dropout_off
    data: str                    # the protocol's data set key
    config: str
    overrides: tuple[str, ...]   # the protocol's common ones, the net's, the ablation's
    seed: int
    keep_probs: bool = False     # keep the validation softmax (the ensemble reads it)

    @property
    def name(self) -> str:
        return f"{self.tag}-seed{self.seed}"


def finished(run_dir: Path, stamp: dict) -> dict | None:
    """The result of a training that finished under this protocol version, else None."""
    try:
        result = json.loads((run_dir / RESULT).read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and result.get("stamp") == stamp else None


def _resumable(ckpt_path: Path, cfg, data: Path) -> bool:
    """Whether the checkpoint an earlier sitting left is this training's: same config, same data."""
    try:
        ckpt = load_checkpoint(ckpt_path)
        same_cfg = checkpoint_config(ckpt, ckpt_path).to_dict() == cfg.to_dict()
    except TwocolError:
        return False
    recorded = (ckpt.get("origin") or {}).get("data")
    return same_cfg and recorded == str(data.resolve())


def run_training(t: Training, data: Path, gpus: str | None, run_dir: Path, stamp: dict) -> dict:
    """Train (or continue) `t`, then test it: the 10-patch error on the validation split, and the
    training split's error in evaluation mode (centre crop, no dropout masks). Returns its result;
    a signal that stopped it raises Interrupted (its checkpoint kept)."""
    cfg = load_config(t.config, [*t.overrides, f"train.seed={t.seed}"])
    placement = Placement.parse(gpus)
    ckpt_path = run_dir / "checkpoint.pt"
    resume = ckpt_path if ckpt_path.is_file() and _resumable(ckpt_path, cfg, data) else None
    if resume is None and run_dir.is_dir():  # another training's leftovers are never resumed
        for p in run_dir.iterdir():
            if p.name != LOG:  # the bench's log of this training's process, open now
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "train.log", "a") as log:
        train(cfg, placement, data, run_dir, resume=resume, stream=log,
              origin={"data": str(data.resolve()), "gpus": gpus})
    start = time.perf_counter()
    net, _, ckpt = load_net(ckpt_path, placement, cfg)
    ten = evaluate([net], make_loader(cfg, data, "val", placement, train=False, ten_crop=True).epoch(0),
                   keep=t.keep_probs)
    on_train = evaluate([net], make_loader(cfg, data, "train", placement, train=False).epoch(0))
    if t.keep_probs:
        np.savez(run_dir / PREDICTIONS, probs=ten["probs"].numpy(), labels=ten["labels"].numpy())
    epochs = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "epoch"]
    rates = [r["lr"] for r in epochs]
    schedule = ckpt["schedule"]
    result = {
        "stamp": stamp, **asdict(t), "overrides": list(t.overrides), "config_values": cfg.to_dict(),
        "params": sum(p.numel() for p in net.parameters()),
        "top1": 100 * ten["top1_error"], "top5": 100 * ten["top5_error"], "val_images": ten["images"],
        "centre_top1": 100 * epochs[-1]["val_top1_error"], "centre_top5": 100 * epochs[-1]["val_top5_error"],
        "train_eval_top1": 100 * on_train["top1_error"], "train_eval_top5": 100 * on_train["top5_error"],
        "epochs": len(epochs), "epoch_cap": cfg.train.epochs,
        # The rate was divided after these epochs (the paper's rule, or the fixed schedule's).
        "cut_after": [e["epoch"] - 1 for e, prev in zip(epochs[1:], rates) if e["lr"] < prev],
        "ended": "plateau" if schedule.get("done") else "cap",
        # Whether the last epoch still set a new best validation top-1 error (at the cap: not converged).
        "improving_at_end": len(epochs) > 1 and epochs[-1]["val_top1_error"] < min(e["val_top1_error"] for e in epochs[:-1]),
        "train_top1_by_epoch": [100 * r["train_top1_error"] for r in epochs],
        "val_top1_by_epoch": [100 * r["val_top1_error"] for r in epochs],
        "val_top5_by_epoch": [100 * r["val_top5_error"] for r in epochs],
        "lr_by_epoch": rates,
        "train_s": sum(r["seconds"] for r in epochs), "test_s": time.perf_counter() - start,
    }
    atomic_write(run_dir / RESULT, json.dumps(result, indent=1) + "\n")
    return result
