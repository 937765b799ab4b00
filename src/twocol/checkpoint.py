"""Checkpoints: written atomically, read with torch.load(weights_only=True), checked against
the config of the net they are loaded into.

A checkpoint is a dict of tensors and plain values only (no pickled objects):
  format, model, optimizer, schedule, epoch, step, batch (position in the epoch), rng, config,
  metrics (the last validation result).
"""
from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import torch

from .config import Config, config_from_dict
from .errors import CheckpointError, ConfigError

FORMAT = 1


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write to a temporary file, fsync, then rename over `path`: a crash at any moment leaves
    either the old checkpoint or the new one, never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


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
    stored = ckpt["config"]["model"]
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


def rng_states() -> dict:
    """Every random generator a run draws from, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def load_net(path: str | Path, placement, cfg: Config | None = None):
    """Build the net a checkpoint holds on `placement` and load its weights.
    With `cfg`, the checkpoint must have the same architecture; without, its own config is used."""
    from .model import build_model

    ckpt = load_checkpoint(path)
    if cfg is None:
        cfg = checkpoint_config(ckpt, path)
    else:
        check_same_architecture(ckpt, cfg, path)
    net = build_model(cfg, placement)
    load_model_state(net, ckpt, path)
    return net, cfg, ckpt
