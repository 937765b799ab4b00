"""Training: the paper's recipe on any placement, with checkpoints a crash cannot spoil.

`train(...)` runs epochs of `train_one_epoch` and `evaluate`, writes metrics.jsonl and a
checkpoint after every epoch (and on SIGINT/SIGTERM), and resumes from one bit for bit.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import sim
from .checkpoint import (check_same_architecture, load_checkpoint, load_model_state, rng_states,
                         save_checkpoint, set_rng_states)
from .config import Config
from .devices import Placement
from .distributed import World, all_sum, barrier, gather_objects, placement_for, shutdown, world_from_env, wrap
from .distributed import init as init_distributed
from .errors import CheckpointError, TrainingDiverged
from .evaluate import evaluate, topk_errors
from .model import build_model
from .optim import LRSchedule, make_optimizer


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; the loop stops at the next step boundary."""


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps, so a checkpoint is
    written at a clean point instead of the process dying mid-update."""

    def __init__(self):
        self.signal = None

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, _frame):
        if self.signal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


@dataclass
class RunState:
    epoch: int = 0  # completed epochs
    batch: int = 0  # batches done in the current epoch
    step: int = 0   # optimizer steps over the whole run


class Logger:
    """Metrics as JSON lines in the run directory; progress on a terminal or as plain lines."""

    def __init__(self, run_dir: Path, stream=sys.stdout, enabled: bool = True):
        self.path = run_dir / "metrics.jsonl"
        self.stream = stream
        self.tty = stream.isatty()
        self.enabled = enabled  # under torchrun only rank 0 speaks

    def record(self, **row) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def progress(self, text: str, done: float) -> None:
        """A bar on a terminal, redrawn in place; a plain line per call otherwise."""
        if not self.enabled:
            return
        if self.tty:
            filled = int(20 * done)
            self.stream.write(f"\r\033[K[{'#' * filled}{'.' * (20 - filled)}] " + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast(cfg: Config, device: torch.device):
    if cfg.train.amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_one_epoch(net, optimizer, loader, cfg: Config, state: RunState, logger: Logger,
                    stop: StopFlag, model=None, world: World = World()) -> dict:
    """One pass over the training set from batch `state.batch`; returns the epoch's means.
    Sums stay on the device between log lines, so a step never waits for the GPU.
    `model` is what runs the step (the DDP wrapper of `net` under torchrun)."""
    model = model or net
    model.train()
    device = net.placement.a
    total = len(loader)

    def zeros():
        return [torch.zeros((), device=device, dtype=torch.float64) for _ in range(3)]

    epoch_sums, epoch_batches, epoch_images = zeros(), 0, 0  # loss, top-1 and top-5 mistakes
    window_sums, window_batches, window_images = zeros(), 0, 0
    window_start = time.perf_counter()
    net.reset_link_bytes()
    for images, labels in loader.epoch(state.epoch, start_batch=state.batch):
        with autocast(cfg, device):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state.batch += 1
        state.step += 1
        w1, w5 = topk_errors(logits.detach(), labels)
        for sums in (epoch_sums, window_sums):
            for acc, v in zip(sums, (loss.detach(), w1, w5)):
                acc += v
        epoch_batches, epoch_images = epoch_batches + 1, epoch_images + labels.shape[0]
        window_batches, window_images = window_batches + 1, window_images + labels.shape[0]
        if state.batch % cfg.train.log_every == 0 or state.batch == total:
            loss_sum, w1_sum, w5_sum, window_images = all_sum(
                [t.item() for t in window_sums] + [window_images], device, world)
            window_batches *= world.size
            if not math.isfinite(loss_sum):  # NaN and inf stay in a sum (all ranks see the same)
                raise TrainingDiverged(
                    f"the loss became non-finite in epoch {state.epoch + 1} by step {state.step}")
            row = {"kind": "step", "epoch": state.epoch + 1, "batch": state.batch, "step": state.step,
                   "loss": loss_sum / window_batches, "top1_error": w1_sum / window_images,
                   "top5_error": w5_sum / window_images, "lr": optimizer.param_groups[0]["lr"],
                   "images_per_s": window_images / (time.perf_counter() - window_start),
                   "link_bytes": net.link_bytes()}
            logger.record(**row)
            moved = sum(b["forward"] + b["backward"] for b in row["link_bytes"].values())
            logger.progress(f"epoch {row['epoch']} [{state.batch}/{total}] loss {row['loss']:.3f} "
                            f"top1 {100 * row['top1_error']:.1f}% top5 {100 * row['top5_error']:.1f}% "
                            f"lr {row['lr']:.2g} {row['images_per_s']:.0f} img/s "
                            f"links {moved / 2 ** 20:.1f} MiB", state.batch / total)
            window_sums, window_batches, window_images = zeros(), 0, 0
            window_start = time.perf_counter()
            net.reset_link_bytes()
        # Under torchrun every rank must stop at the same step, or the others hang in DDP.
        if all_sum([float(stop.signal is not None)], device, world)[0] > 0:
            raise Interrupted
    if epoch_batches == 0:
        return {}
    loss_sum, w1_sum, w5_sum, epoch_images = all_sum([t.item() for t in epoch_sums] + [epoch_images], device, world)
    epoch_batches *= world.size
    return {"train_loss": loss_sum / epoch_batches, "train_top1_error": w1_sum / epoch_images,
            "train_top5_error": w5_sum / epoch_images}


def checkpoint_state(net, optimizer, schedule, state: RunState, cfg: Config, metrics: dict,
                     world: World) -> dict:
    """Collective under torchrun (every rank's RNG states are gathered); rank 0 saves it."""
    rng = gather_objects(rng_states(), world)
    return {"model": net.state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "epoch": state.epoch, "batch": state.batch,
            "step": state.step, "rng": rng[0], "rng_per_rank": rng, "world_size": world.size,
            "config": cfg.to_dict(), "metrics": metrics}


def save(path: Path, state: dict, world: World) -> None:
    if world.is_main:
        save_checkpoint(path, state)
    barrier(world)


def evaluate_sharded(net, loader, world: World) -> dict:
    """Each rank evaluates its shard of the split; the counts are summed over ranks."""
    r = evaluate([net], loader.epoch(0))
    w1, w5, n = all_sum([r["top1_error"] * r["images"], r["top5_error"] * r["images"], r["images"]],
                        net.placement.a, world)
    return {"top1_error": w1 / n, "top5_error": w5 / n, "images": int(n)}


def restore(ckpt: dict, path: Path, net, optimizer, schedule, cfg: Config, world: World) -> RunState:
    check_same_architecture(ckpt, cfg, path)
    saved_world = ckpt.get("world_size", 1)
    if saved_world != world.size and ckpt["batch"] != 0:
        raise CheckpointError(f"{path} was written mid-epoch by {saved_world} process(es); it can only "
                              f"resume on {saved_world}, not {world.size} (epoch-end checkpoints resume on any number)")
    load_model_state(net, ckpt, path)
    optimizer.load_state_dict(ckpt["optimizer"])
    schedule.load_state_dict(ckpt["schedule"])
    if saved_world == world.size:
        set_rng_states(ckpt["rng_per_rank"][world.rank])
    else:  # other shards now: give each rank a fresh stream derived from the run's position
        seed_everything(cfg.train.seed + 1000 * ckpt["step"] + world.rank)
    return RunState(epoch=ckpt["epoch"], batch=ckpt["batch"], step=ckpt["step"])


def train(cfg: Config, placement: Placement, data_root: Path, run_dir: Path,
          resume: Path | None = None, check_isolation: bool = False, stream=sys.stdout,
          world: World = World()) -> dict:
    """Train `cfg` on `placement`; returns the last epoch's metrics. Under torchrun, call it on
    every rank with the same arguments: rank 0 logs and writes the checkpoint."""
    from .data import make_loader  # the data stack (DALI) loads only when training
    from .viz.colour import LOG_KEY, column_scores

    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    logger = Logger(run_dir, stream, enabled=world.is_main)
    seed_everything(cfg.train.seed + world.rank)  # every rank draws its own dropout masks
    net = build_model(cfg, placement, seed=cfg.train.seed)
    net.use_streams(placement.a.type == "cuda")
    optimizer = make_optimizer(net, cfg.optim)
    schedule = LRSchedule(optimizer, cfg.schedule, cfg.optim.lr)
    state, metrics = RunState(), {}
    if resume is not None:
        ckpt = load_checkpoint(resume)
        state = restore(ckpt, resume, net, optimizer, schedule, cfg, world)
        metrics = ckpt.get("metrics", {})
        logger.line(f"resumed from {resume}: epoch {state.epoch} done, batch {state.batch}, step {state.step}")
    else:
        logger.record(kind="init", epoch=0, **{LOG_KEY: column_scores(net)})
    model = wrap(net, world)
    if world.is_main:
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    shard = dict(shard_id=world.rank, num_shards=world.size)
    train_loader = make_loader(cfg, data_root, "train", placement, train=True, seed=cfg.train.seed, **shard)
    val_loader = make_loader(cfg, data_root, "val", placement, train=False, **shard)
    ckpt_path = run_dir / "checkpoint.pt"
    logger.line(f"training {cfg.name} on {placement}" + (f" x {world.size} processes" if world.active else "")
                + f": {len(train_loader)} batches of {cfg.data.batch_size} per epoch"
                + (" per process" if world.active else "") + f", {cfg.train.epochs} epochs, run dir {run_dir}")
    with StopFlag() as stop, sim.isolation(check_isolation):
        while state.epoch < cfg.train.epochs:
            start = time.perf_counter()
            try:
                epoch_metrics = train_one_epoch(net, optimizer, train_loader, cfg, state, logger, stop,
                                                model=model, world=world)
            except Interrupted:
                if not all(torch.isfinite(p).all() for p in net.parameters()):
                    raise TrainingDiverged(f"stopped by signal with non-finite weights; kept {ckpt_path}") from None
                save(ckpt_path, checkpoint_state(net, optimizer, schedule, state, cfg, metrics, world), world)
                logger.line(f"stopped by signal {stop.signal} at epoch {state.epoch + 1} batch {state.batch}; "
                            f"checkpoint {ckpt_path}; continue with --resume {ckpt_path}")
                raise
            except TrainingDiverged as e:
                kept = f"the last good checkpoint is {ckpt_path}" if ckpt_path.exists() else "no checkpoint was written yet"
                raise TrainingDiverged(f"{e}; {kept}") from None
            val = evaluate_sharded(net, val_loader, world)
            state.epoch, state.batch = state.epoch + 1, 0
            lr = optimizer.param_groups[0]["lr"]
            dropped = schedule.step(state.epoch, val["top1_error"])
            metrics = {"kind": "epoch", "epoch": state.epoch, "step": state.step, "lr": lr,
                       **epoch_metrics, "val_top1_error": val["top1_error"],
                       "val_top5_error": val["top5_error"], "seconds": time.perf_counter() - start,
                       LOG_KEY: column_scores(net)}
            logger.record(**metrics)
            save(ckpt_path, checkpoint_state(net, optimizer, schedule, state, cfg, metrics, world), world)
            logger.line(f"epoch {state.epoch}/{cfg.train.epochs}: train loss {metrics.get('train_loss', float('nan')):.3f} "
                        f"val top1 {100 * val['top1_error']:.2f}% top5 {100 * val['top5_error']:.2f}% "
                        f"({metrics['seconds']:.0f} s)" + (f"; lr now {schedule.lr:.2g}" if dropped else ""))
    return metrics


def default_data_dir(cfg: Config) -> Path:
    from .data.synth import GENERATOR

    d = cfg.data
    return Path("data") / f"synthetic-v{GENERATOR}-{d.synth_classes}x{d.synth_per_class}-{d.image_size}px"


def resolve_data(cfg: Config, data: str | None) -> Path:
    """--data DIR, or the built-in synthetic set for this config (made on first use)."""
    from .data import ensure_synthetic

    if data is not None:
        return Path(data)
    return ensure_synthetic(default_data_dir(cfg), cfg)


DEFAULT_CONFIG = "configs/small_twocol.yaml"


def add_arguments(p) -> None:
    from .cli import add_config_arguments
    add_config_arguments(p, default_config=None, config_help=f"YAML config (default: {DEFAULT_CONFIG}, "
                                                             "or with --resume the checkpoint's own)")
    p.add_argument("--data", help="prepared dataset (twocol prepare / twocol synth); default: the "
                                  "built-in synthetic set under data/, created if missing")
    p.add_argument("--run-dir", help="where metrics, checkpoint and plot go (default: "
                                     "<train.out_dir>/<config name>-<date-time>)")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue a run from its checkpoint.pt "
                                                          "(in that checkpoint's directory unless --run-dir)")


def run(args) -> int:
    from .checkpoint import load_checkpoint
    from .config import config_from_dict, load_config
    from .plot import plot_run

    resume = Path(args.resume) if args.resume else None
    if resume is not None and args.config is None:
        # Continue with the run's own config (overrides still apply, e.g. train.epochs=...).
        cfg = config_from_dict(load_checkpoint(resume)["config"], f"config stored in {resume}", args.overrides)
    else:
        cfg = load_config(args.config or DEFAULT_CONFIG, args.overrides)
    world = world_from_env()
    placement = placement_for(world, args.gpus)
    init_distributed(world, placement)
    try:
        if args.run_dir:
            run_dir = Path(args.run_dir)
        elif resume is not None:
            run_dir = resume.parent
        else:  # rank 0's clock names the run for every rank
            run_dir = gather_objects(Path(cfg.train.out_dir) / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}", world)[0]
        if world.is_main:
            data_root = resolve_data(cfg, args.data)
        barrier(world)  # the others wait while rank 0 makes the synthetic set
        if not world.is_main:
            data_root = resolve_data(cfg, args.data)
        try:
            final = train(cfg, placement, data_root, run_dir, resume=resume,
                          check_isolation=args.check_isolation, world=world)
        except Interrupted:
            return 130
    finally:
        shutdown(world)
    if not world.is_main:
        return 0
    png = plot_run(run_dir / "metrics.jsonl", run_dir / "curves.png")
    print(f"done: val top-1 error {100 * final['val_top1_error']:.2f}%, top-5 {100 * final['val_top5_error']:.2f}%; "
          f"checkpoint {run_dir / 'checkpoint.pt'}, curves {png}")
    return 0
