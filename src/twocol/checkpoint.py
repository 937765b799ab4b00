"""Checkpoints: what a run's state is, how it is written (atomically) and read back (with
torch.load(weights_only=True)), and how it is checked against the net it is loaded into.

A checkpoint is a dict of tensors and plain values only (no pickled objects):
  format, model, optimizer, schedule, epoch, batch (position in the epoch), step, rng (rank 0's
  generators), rng_per_rank, world_size (processes under torchrun), config (the resolved
  config), metrics (the last epoch's row of metrics.jsonl), classes (the dataset's class names,
  label order), origin (the run's --data, resolved, and --gpus; None for their defaults).
Checkpoints written before classes and origin existed lack them: nothing is checked or reused.

Every field is checked before it is used (checkpoint_checks.py): a file that is not what this
code wrote, or was edited, is a CheckpointError naming the field, never a traceback.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .atomic import atomic_write
from .checkpoint_checks import (check_optimizer_state, check_position, check_same_architecture, check_schedule,
                                check_weights, check_zip, stored_cfg, stored_config)
from .config import Config, config_from_dict
from .distributed import World, barrier, gather_objects
from .errors import CheckpointError, ConfigError
from .interrupt import shielded
from .model import build_model
from .rng import rng_states, seed_everything, set_rng_states
from .typed_yaml import check_bounded, show

FORMAT = 1


@dataclass
class RunState:
    """Where a run stands."""
    epoch: int = 0  # completed epochs
    batch: int = 0  # batches done in the current epoch
    step: int = 0   # optimizer steps over the whole run


class _Recorded:
    """A file whose write errors are kept: torch.save turns an OSError of the file it writes
    (disk full) into a RuntimeError that has lost the reason ('unexpected pos ...')."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Written atomically: a crash at any moment leaves the old checkpoint or the new one. A
    failed write (disk full, read-only folder, an error of the file system) is a
    CheckpointError naming the path and the OS's reason; the previous checkpoint is then
    untouched."""
    path = Path(path)
    out = None

    def write(f):
        nonlocal out
        out = _Recorded(f)
        torch.save({"format": FORMAT, **state}, out)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with shielded():  # a second Ctrl-C waits for the save to end
            atomic_write(path, write)
    except (OSError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and (out is None or out.error is None):
            raise  # not a failed write: a bug, shown as one
        e = out.error if isinstance(e, RuntimeError) else e
        kept = "the previous checkpoint is unchanged" if path.exists() else "no checkpoint was written"
        raise CheckpointError(f"cannot write {path}: {e.strerror or e}; {kept}") from None


def checkpoint_state(net, optimizer, schedule, state: RunState, cfg: Config, metrics: dict,
                     world: World, about: dict | None = None) -> dict:
    """The whole state of a run. Collective under torchrun (every rank's RNG states are
    gathered), so every rank calls it; `save` then writes it from rank 0. `about`: the run's
    classes and origin."""
    rng = gather_objects(rng_states(), world)
    return {"model": net.state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "epoch": state.epoch, "batch": state.batch,
            "step": state.step, "rng": rng[0], "rng_per_rank": rng, "world_size": world.size,
            "config": cfg.to_dict(), "metrics": metrics, **(about or {})}


def save(path: Path, state: dict, world: World) -> None:
    if world.is_main:
        save_checkpoint(path, state)
    barrier(world)


def restore(ckpt: dict, path: Path, net, optimizer, schedule, cfg: Config, world: World,
            batches: int | None = None) -> RunState:
    """Load a checkpoint into a freshly built run; returns where the run stands. `batches`:
    the batches per epoch of this run (a mid-epoch position must lie within it)."""
    check_same_architecture(ckpt, cfg, path)
    epoch, batch, step, rng = check_position(ckpt, path, world.size, world.rank, batches)
    load_model_state(net, ckpt, path)
    check_optimizer_state(ckpt["optimizer"], optimizer, net, path)
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise CheckpointError(f"{path}: optimizer does not fit this net's optimiser ({show(str(e), 120)})") from None
    check_schedule(ckpt["schedule"], path)
    schedule.load_state_dict(ckpt["schedule"])
    if rng is not None:
        set_rng_states(rng)
    else:  # other shards now: give each rank a fresh stream derived from the run's position
        seed_everything(cfg.train.seed + 1000 * step + world.rank)
    return RunState(epoch=epoch, batch=batch, step=step)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    check_zip(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as e:
        if isinstance(e, pickle.UnpicklingError) and "weights only load failed" in str(e).lower():
            # torch's own message, a paragraph on how to load it anyway, would tell how to run its code
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            what = found.group(1) if found else "code to rebuild its objects"
            raise CheckpointError(f"{path} is not a twocol checkpoint: loading it would call {what}, which twocol "
                                  "never runs (a checkpoint holds only tensors and plain values)") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if len(first) > 160:  # cut between words
            first = first[:160].rsplit(" ", 1)[0] + " ..."
        raise CheckpointError(f"{path} is truncated or not a twocol checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path} is not a twocol checkpoint (format {FORMAT})")
    # Shared references let a small file stand for a huge tree of values: the fields that are
    # walked whole (compared, printed, written back as JSON) are bounded first; the others are
    # only ever read at known places.
    try:
        check_bounded(ckpt["config"], f"config stored in {path}")
        check_bounded(ckpt.get("metrics", {}), f"metrics stored in {path}")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(ckpt["config"], dict) or not isinstance(ckpt["config"].get("model", {}), dict):
        raise CheckpointError(f"{path}: config must be a mapping with a 'model' mapping")
    return ckpt


def checkpoint_config(ckpt: dict, path: str | Path, overrides: list[str] = ()) -> Config:
    """The config a checkpoint was trained with, and `overrides` of it (`train --resume` and
    `eval` without --config): each is checked as any override is, and one that would change the
    net (a model setting, or the dropout scale at test) is refused, naming the key."""
    cfg = stored_cfg(ckpt, path)
    if overrides:
        cfg = config_from_dict(stored_config(ckpt), f"config stored in {path}", overrides)
        check_same_architecture(ckpt, cfg, path, source="override")
    return cfg


def load_model_state(net: torch.nn.Module, ckpt: dict, path: str | Path) -> None:
    """Load the weights, each checked first (`check_weights`)."""
    check_weights(net, ckpt, path)
    net.load_state_dict(ckpt["model"])


def load_net(path: str | Path, placement, cfg: Config | None = None, overrides: list[str] = ()):
    """Build the net a checkpoint holds on `placement` and load its weights. With `cfg`, the
    checkpoint must have the same architecture; without, its own config is used, with
    `overrides` (`checkpoint_config`)."""
    ckpt = load_checkpoint(path)
    if cfg is None:
        cfg = checkpoint_config(ckpt, path, overrides)
    else:
        check_same_architecture(ckpt, cfg, path)
    net = build_model(cfg, placement)
    load_model_state(net, ckpt, path)
    return net, cfg, ckpt
