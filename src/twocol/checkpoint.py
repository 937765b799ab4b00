"""Checkpoints: what a run's state is, how it is written (atomically) and read back (with
torch.load(weights_only=True)), and how it is checked against the net it is loaded into.

A checkpoint is a dict of tensors and plain values only (no pickled objects):
  format, model, optimizer, schedule, epoch, batch (position in the epoch), step, rng (rank 0's
  generators), rng_per_rank, world_size (processes under torchrun), config (the resolved
  config), metrics (the last epoch's row of metrics.jsonl).
"""
from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .atomic import atomic_write
from .config import Config, config_from_dict
from .distributed import World, barrier, gather_objects
from .errors import CheckpointError, ConfigError
from .model import build_model
from .rng import rng_states, seed_everything, set_rng_states

FORMAT = 1


@dataclass
class RunState:
    """Where a run stands."""
    epoch: int = 0  # completed epochs
    batch: int = 0  # batches done in the current epoch
    step: int = 0   # optimizer steps over the whole run


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Written atomically: a crash at any moment leaves the old checkpoint or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def checkpoint_state(net, optimizer, schedule, state: RunState, cfg: Config, metrics: dict,
                     world: World) -> dict:
    """The whole state of a run. Collective under torchrun (every rank's RNG states are
    gathered), so every rank calls it; `save` then writes it from rank 0."""
    rng = gather_objects(rng_states(), world)
    return {"model": net.state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "epoch": state.epoch, "batch": state.batch,
            "step": state.step, "rng": rng[0], "rng_per_rank": rng, "world_size": world.size,
            "config": cfg.to_dict(), "metrics": metrics}


def save(path: Path, state: dict, world: World) -> None:
    if world.is_main:
        save_checkpoint(path, state)
    barrier(world)


def restore(ckpt: dict, path: Path, net, optimizer, schedule, cfg: Config, world: World) -> RunState:
    """Load a checkpoint into a freshly built run; returns where the run stands."""
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


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is truncated or not a twocol checkpoint ({first[:160]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path} is not a twocol checkpoint (format {FORMAT})")
    return ckpt


def checkpoint_config(ckpt: dict, path: str | Path) -> Config:
    try:
        return config_from_dict(ckpt["config"], source=f"config stored in {path}")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def check_same_architecture(ckpt: dict, cfg: Config, path: str | Path) -> None:
    """Refuse a checkpoint whose net differs from the config's (by any model setting)."""
    # Read through the config classes, so a key added since the checkpoint was written compares
    # as its default.
    stored = checkpoint_config(ckpt, path).to_dict()["model"]
    wanted = cfg.to_dict()["model"]

    def diff(a, b, prefix=""):
        for k in sorted(set(a) | set(b)):
            va, vb = a.get(k), b.get(k)
            if isinstance(va, dict) and isinstance(vb, dict):
                yield from diff(va, vb, f"{prefix}{k}.")
            elif va != vb:
                yield f"{prefix}{k}: checkpoint {va!r}, config {vb!r}"

    diffs = list(diff(stored, wanted))
    # Dropout changes no weight: a net trained with one rate may be evaluated with another.
    diffs = [d for d in diffs if not d.startswith("dropout")]
    if diffs:
        raise CheckpointError(f"{path} holds another architecture: model.{diffs[0]}"
                              + (f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""))


def load_model_state(net: torch.nn.Module, ckpt: dict, path: str | Path) -> None:
    try:
        net.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit this net: {str(e).splitlines()[0]}") from None


def load_net(path: str | Path, placement, cfg: Config | None = None):
    """Build the net a checkpoint holds on `placement` and load its weights.
    With `cfg`, the checkpoint must have the same architecture; without, its own config is used."""
    ckpt = load_checkpoint(path)
    if cfg is None:
        cfg = checkpoint_config(ckpt, path)
    else:
        check_same_architecture(ckpt, cfg, path)
    net = build_model(cfg, placement)
    load_model_state(net, ckpt, path)
    return net, cfg, ckpt
