"""Every random generator a run draws from, seeded and saved together, so that a resumed run
continues the very streams an uninterrupted one would have drawn."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_states() -> dict:
    """The state of every generator, as tensors and plain values (what a checkpoint can hold
    under torch.load(weights_only=True))."""
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


def _int(v, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def rng_problem(state) -> str | None:
    """What in a saved `rng_states()` cannot be set in this process, or None; the answer
    starts with the part's name ('.torch ...') or with ' must' for the whole."""
    if not isinstance(state, dict):
        return " must be a mapping of generator states"
    mine = torch.get_rng_state()
    t = state.get("torch")
    if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.shape != mine.shape:
        return f".torch must be a uint8 tensor of shape {tuple(mine.shape)} (torch's CPU generator)"
    n = state.get("numpy")
    if not (isinstance(n, dict) and n.get("kind") == "MT19937" and isinstance(n.get("keys"), torch.Tensor)
            and n["keys"].shape == (624,) and _int(n.get("pos"), 0, 624) and _int(n.get("has_gauss"), 0, 1)
            and isinstance(n.get("cached"), float)):
        return ".numpy must be an MT19937 state: 624 keys, pos 0..624, has_gauss, cached"
    if not (n["keys"].dtype == torch.int64 and bool(((n["keys"] >= 0) & (n["keys"] < 2 ** 32)).all())):
        return ".numpy.keys must be 32-bit unsigned values"
    p = state.get("python")
    if not (isinstance(p, list) and len(p) == 625 and all(_int(v, 0, 2 ** 32 - 1) for v in p[:624])
            and _int(p[624], 0, 624) and state.get("python_version") == random.getstate()[0]
            and (state.get("python_gauss") is None or isinstance(state.get("python_gauss"), float))):
        return ".python must be a Mersenne Twister state of 625 values (python_version 3)"
    cuda = state.get("cuda")
    if cuda is not None and not (isinstance(cuda, list) and all(
            isinstance(c, torch.Tensor) and c.dtype == torch.uint8 for c in cuda)):
        return ".cuda must be a list of uint8 tensors"
    return None
