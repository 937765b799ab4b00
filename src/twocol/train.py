"""Training: the paper's recipe on any placement, with checkpoints a crash cannot spoil.

`train(cfg, placement, data_root, run_dir)` runs epochs of `train_one_epoch`, evaluates on the
validation split after each, writes a row to metrics.jsonl and a checkpoint, and on SIGINT or
SIGTERM checkpoints mid-epoch and stops. `resume=` continues from a checkpoint bit for bit.
Under torchrun every rank calls it with the same arguments; rank 0 logs and writes.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

from . import sim
from .atomic import atomic_write
from .checkpoint import RunState, checkpoint_config, checkpoint_state, load_checkpoint, restore, save
from .checkpoint_checks import MAX_EPOCHS, check_same_classes
from .rundir import claim_run_dir, same_file
from .config import Config, DataConfig, show
from .data.bad import BadImageLog
from .data.loader import make_loader
from .devices import Placement
from .distributed import World, all_sum, wrap
from .errors import CheckpointError, DataError, TrainingDiverged
from .evaluate import evaluate_sharded
from .interrupt import Interrupted, StopFlag
from .metrics import COLOUR_KEY, column_scores, topk_errors
from .model import build_model
from .monitor import MetricsLog, Progress, duration, waited
from .optim import LRSchedule, make_optimizer
from .rng import seed_everything
from .step import train_step


class Window:
    """Sums of loss, top-1 and top-5 mistakes over some steps, kept on the device so that a
    step never waits for the GPU to read them; read (and summed over ranks) when logged. Also
    the seconds spent waiting for the loader's next batch (`data_wait`: their share of the
    window's wall time, averaged over ranks)."""

    def __init__(self, device: torch.device):
        self.sums = [torch.zeros((), device=device, dtype=torch.float64) for _ in range(3)]
        self.batches = self.images = 0
        self.wait = 0.0
        self.start = time.perf_counter()

    def add(self, loss, wrong1, wrong5, images: int, wait: float = 0.0) -> None:
        for acc, v in zip(self.sums, (loss, wrong1, wrong5)):
            acc += v
        self.batches, self.images, self.wait = self.batches + 1, self.images + images, self.wait + wait

    def means(self, world: World) -> dict:
        wall = time.perf_counter() - self.start
        loss, w1, w5, images, wait_share = all_sum([t.item() for t in self.sums] + [self.images, self.wait / wall],
                                                   self.sums[0].device, world)
        batches = self.batches * world.size
        return {"loss": loss / batches, "top1_error": w1 / images, "top5_error": w5 / images,
                "images_per_s": images / wall, "data_wait": wait_share / world.size}

    def time_left(self, batch: int, batches: int, epochs_after: int) -> dict:
        """Estimated seconds left in the epoch (now at `batch` of `batches`) and in the run
        (`epochs_after` more epochs), at the pace of this window (the epoch so far); training steps only (the
        validation passes come on top)."""
        per_batch = (time.perf_counter() - self.start) / max(1, self.batches)
        epoch = (batches - batch) * per_batch
        return {"eta_epoch_s": epoch, "eta_run_s": epoch + epochs_after * batches * per_batch}


class TooManyBadImages(DataError):
    """More bad images than a run accepts (one line, exit code 2)."""


def bad_image_stop(loader, bad_log: BadImageLog, epoch: int, excluded: int, runtime_bad: int, labels,
                   world: World) -> tuple[int, str | None]:
    """Record the bad images of the batch just read; returns the epoch's count of bad images
    found while reading (`excluded` were found at start) and, when the run must stop, why.
    Every rank decides together (under torchrun) before the step, so that none is left
    waiting in it."""
    bad = loader.take_bad()
    bad_log.record(epoch + 1, "train", bad)
    runtime_bad += sum(1 for b in bad if b.index not in loader.excluded)
    total, n, limit = excluded + runtime_bad, loader.num_images, loader.cfg.data.max_bad_fraction
    why = None
    if total > limit * n:
        why = (f"{total} of the {n} images of epoch {epoch + 1} are bad (more than data.max_bad_fraction="
               f"{limit:g})")
    elif labels.shape[0] == 0:
        why = f"every image of a batch of epoch {epoch + 1} is bad"
    if world.active and all_sum([float(why is not None)], labels.device, world)[0] > 0 and why is None:
        why = "another process met too many bad images"
    return runtime_bad, why


def check_resumed_plan(ckpt: dict, path: Path, cfg: Config, loader) -> None:
    """A checkpoint written mid-epoch continues that epoch's plan at its batch: refuse a config
    whose plan of that epoch differs from the checkpoint's (data.batch_size, train.seed, a crop
    or lighting key), naming the key, since the rest of the epoch would then repeat some images
    and leave out others, or treat them otherwise. Each changed key is tried alone, so one that
    leaves the plan as it is (data.workers, lighting_until_epoch past this epoch) is kept."""
    epoch, batch = ckpt.get("epoch"), ckpt.get("batch")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (epoch, batch)) or batch <= 0 \
            or not 0 <= epoch <= MAX_EPOCHS:
        return  # an epoch's end, or a field that restore() refuses
    trained = checkpoint_config(ckpt, path)
    plan = loader.plan(epoch, trained.data, trained.train.seed)
    changed = [(f"data.{f.name}", getattr(trained.data, f.name), getattr(cfg.data, f.name),
                dataclasses.replace(trained.data, **{f.name: getattr(cfg.data, f.name)}), trained.train.seed)
               for f in dataclasses.fields(DataConfig) if getattr(trained.data, f.name) != getattr(cfg.data, f.name)]
    if cfg.train.seed != trained.train.seed:
        changed.append(("train.seed", trained.train.seed, cfg.train.seed, trained.data, cfg.train.seed))
    for key, was, now, data, seed in changed:
        if not plan.same_as(loader.plan(epoch, data, seed)):
            raise CheckpointError(f"{path} was written mid-epoch (epoch {epoch + 1}, batch {batch} of {len(plan)}): "
                                  f"{key}={show(now)} ({show(was)} in the checkpoint) would change the rest of that "
                                  f"epoch; resume without it to the epoch's end (train.epochs={epoch + 1}), then with it")


def train_one_epoch(net, optimizer, loader, cfg: Config, state: RunState, log: MetricsLog, progress: Progress,
                    stop: StopFlag, model=None, world: World = World(), bad_log: BadImageLog | None = None) -> dict:
    """One pass over the training set from batch `state.batch`; returns the epoch's means.
    `model` is what runs the step (the DDP wrapper of `net` under torchrun). Bad images are
    recorded in `bad_log`; too many raise TooManyBadImages before the step."""
    model = model or net
    model.train()
    device, total = net.placement.a, len(loader)
    epoch, window = Window(device), Window(device)
    net.reset_link_bytes()
    loader.reset_feed_bytes()
    # Bad images of the epoch: those found at start are known (and recorded) for all of it, the
    # others are counted as they are met (in a resumed epoch, from the batch it resumes at).
    excluded, runtime_bad = loader.excluded_in(state.epoch), 0
    if bad_log is not None:
        bad_log.record(state.epoch + 1, "train", excluded)
    excluded = len(excluded)
    for (images, labels), wait in waited(loader.epoch(state.epoch, start_batch=state.batch)):
        if bad_log is not None:
            runtime_bad, why = bad_image_stop(loader, bad_log, state.epoch, excluded, runtime_bad, labels, world)
            if why is not None:
                raise TooManyBadImages(why)
        logits, loss = train_step(model, optimizer, images, labels, cfg.train.amp, device)
        state.batch, state.step = state.batch + 1, state.step + 1
        w1, w5 = topk_errors(logits.detach(), labels)
        for sums in (epoch, window):
            sums.add(loss.detach(), w1, w5, labels.shape[0], wait)
        if state.batch % cfg.train.log_every == 0 or state.batch == total:
            means = window.means(world)
            if not math.isfinite(means["loss"]):  # NaN and inf stay in a sum (all ranks see the same)
                raise TrainingDiverged(f"the loss became non-finite in epoch {state.epoch + 1} by step {state.step}")
            row = {"kind": "step", "epoch": state.epoch + 1, "batch": state.batch, "step": state.step, **means,
                   **epoch.time_left(state.batch, total, cfg.train.epochs - state.epoch - 1),
                   "lr": optimizer.param_groups[0]["lr"], "link_bytes": net.link_bytes(),
                   "feed_bytes": loader.feed_bytes()}
            log.record(**row)
            moved = sum(b["forward"] + b["backward"] for b in row["link_bytes"].values())
            fed = sum(row["feed_bytes"].values())
            progress.update(state.batch, f"epoch {row['epoch']} [{state.batch}/{total}] loss {row['loss']:.3f} "
                            f"top1 {100 * row['top1_error']:.1f}% top5 {100 * row['top5_error']:.1f}% "
                            f"lr {row['lr']:.2g} {row['images_per_s']:.0f} img/s links {moved / 2 ** 20:.1f} MiB"
                            f" feed {fed / 2 ** 20:.1f} MiB data wait {100 * row['data_wait']:.0f}%; left: epoch "
                            f"{duration(row['eta_epoch_s'])}, run {duration(row['eta_run_s'])}")
            window = Window(device)
            net.reset_link_bytes()
            loader.reset_feed_bytes()
        # Under torchrun every rank must stop at the same step, or the others hang in DDP.
        if all_sum([float(stop.signal is not None)], device, world)[0] > 0:
            raise Interrupted(stop.signal)
    if epoch.batches == 0:
        return {}
    return {f"train_{k}": v for k, v in epoch.means(world).items() if k != "images_per_s"}


def train(cfg: Config, placement: Placement, data_root: Path, run_dir: Path, resume: Path | None = None,
          check_isolation: bool = False, stream=sys.stdout, world: World = World(), origin: dict | None = None) -> dict:
    """Train `cfg` on `placement` with the dataset at `data_root`, writing to `run_dir`
    (metrics.jsonl, config.json, checkpoint.pt), which this process holds meanwhile; returns
    the last epoch's metrics. `origin`: what the checkpoint records of how the run was
    started (--data, --gpus) for a later --resume."""
    with claim_run_dir(run_dir, resume, world):
        return _train(cfg, placement, data_root, run_dir, resume, check_isolation, stream, world, origin)


def _train(cfg: Config, placement: Placement, data_root: Path, run_dir: Path, resume: Path | None,
           check_isolation: bool, stream, world: World, origin: dict | None) -> dict:
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(run_dir / "metrics.jsonl", enabled=world.is_main)
    bad_log = BadImageLog(run_dir, run_dir / "metrics.jsonl", rank=world.rank if world.active else None)
    seed_everything(cfg.train.seed + world.rank)  # every rank draws its own dropout masks
    net = build_model(cfg, placement, seed=cfg.train.seed)
    net.use_streams(placement.a.type == "cuda")
    optimizer = make_optimizer(net, cfg.optim, own_groups={s.layer for s in cfg.schedule.layer_steps})
    schedule = LRSchedule(optimizer, cfg.schedule, cfg.optim.lr)
    shard = dict(shard_id=world.rank, num_shards=world.size)
    train_loader = make_loader(cfg, data_root, "train", placement, train=True, seed=cfg.train.seed, **shard)
    val_loader = make_loader(cfg, data_root, "val", placement, train=False, **shard)
    if len(train_loader) == 0:
        n = len(train_loader.files) // world.size
        raise DataError(f"data.batch_size={cfg.data.batch_size} is larger than the {n} training image(s) of "
                        f"{data_root}" + (" each process gets" if world.active else "") + ": an epoch would have no batch")
    # Plain lines off a terminal: one per logged step (a bar redrawn in place on one).
    progress = Progress("train", len(train_loader), stream, every=0, enabled=world.is_main)
    state, metrics = RunState(), {}
    about = {"classes": list(train_loader.dataset.classes), "origin": origin or {"data": None, "gpus": None}}
    if resume is not None:
        ckpt = load_checkpoint(resume)
        check_same_classes(ckpt, resume, about["classes"], data_root)
        check_resumed_plan(ckpt, resume, cfg, train_loader)
        state = restore(ckpt, resume, net, optimizer, schedule, cfg, world, batches=len(train_loader))
        metrics = ckpt.get("metrics", {})
        log.keep_until(state.step, state.epoch, metrics)  # rows past the checkpoint are work it lacks
        progress.line(f"resumed from {resume}: epoch {state.epoch} done, batch {state.batch}, step {state.step}")
    else:
        log.start()
        log.record(kind="init", epoch=0, **{COLOUR_KEY: column_scores(net)})
    model = wrap(net, world)
    if world.is_main:
        atomic_write(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2))
    ckpt_path = run_dir / "checkpoint.pt"
    if resume is not None and not same_file(resume, ckpt_path):  # continued in another run directory
        save(ckpt_path, checkpoint_state(net, optimizer, schedule, state, cfg, metrics, world, about), world)
    progress.line(f"training {cfg.name} on {placement}" + (f" x {world.size} processes" if world.active else "")
                  + f": {len(train_loader)} batches of {cfg.data.batch_size} per epoch"
                  + (" per process" if world.active else "") + f", {cfg.train.epochs} epochs, "
                  f"{torch.get_num_threads()} compute thread(s), run dir {run_dir}")
    with StopFlag() as stop, sim.isolation(check_isolation):
        while state.epoch < cfg.train.epochs and not (cfg.schedule.end_on_plateau and schedule.done):
            start = time.perf_counter()
            try:
                epoch_metrics = train_one_epoch(net, optimizer, train_loader, cfg, state, log, progress, stop,
                                                model=model, world=world, bad_log=bad_log)
            except Interrupted:
                if not all(torch.isfinite(p).all() for p in net.parameters()):
                    raise TrainingDiverged(f"stopped by signal with non-finite weights; kept {ckpt_path}") from None
                save(ckpt_path, checkpoint_state(net, optimizer, schedule, state, cfg, metrics, world, about), world)
                progress.line(f"stopped by signal {stop.signal} at epoch {state.epoch + 1} batch {state.batch}; "
                              f"checkpoint {ckpt_path}; continue with --resume {ckpt_path}")
                raise
            except TooManyBadImages as e:
                save(ckpt_path, checkpoint_state(net, optimizer, schedule, state, cfg, metrics, world, about), world)
                raise TooManyBadImages(f"{e}: see {run_dir / 'bad_images.tsv'}; checkpoint {ckpt_path} (repair or "
                                       f"re-prepare the data, then --resume {ckpt_path})") from None
            except TrainingDiverged as e:
                kept = f"the last good checkpoint is {ckpt_path}" if ckpt_path.exists() else "no checkpoint was written yet"
                raise TrainingDiverged(f"{e}; {kept}") from None
            val = evaluate_sharded(net, val_loader, world)
            bad_log.record(state.epoch + 1, "val", val_loader.take_bad())
            state.epoch, state.batch = state.epoch + 1, 0
            lr = optimizer.param_groups[0]["lr"]
            dropped = schedule.step(state.epoch, val["top1_error"])
            metrics = {"kind": "epoch", "epoch": state.epoch, "step": state.step, "lr": lr, **epoch_metrics,
                       "val_top1_error": val["top1_error"], "val_top5_error": val["top5_error"],
                       "seconds": time.perf_counter() - start, COLOUR_KEY: column_scores(net)}
            # Checkpoint first: the log never claims an epoch that the checkpoint lacks.
            save(ckpt_path, checkpoint_state(net, optimizer, schedule, state, cfg, metrics, world, about), world)
            log.record(**metrics)
            progress.line(f"epoch {state.epoch}/{cfg.train.epochs}: train loss {metrics.get('train_loss', float('nan')):.3f} "
                          f"val top1 {100 * val['top1_error']:.2f}% top5 {100 * val['top5_error']:.2f}% "
                          f"({metrics['seconds']:.0f} s)" + (f"; lr now {schedule.lr:.2g}" if dropped else ""))
    return metrics
