"""What a config's net would cost before it exists: its parameters and activations from the
plan's shapes alone (layers.py), and the guard that refuses a net too large to exist or whose
training step would not fit its devices' memory, before anything is allocated."""
from __future__ import annotations

import os

import torch

from .config import Config, ModelConfig
from .devices import Placement
from .errors import ConfigError
from .layers import plan

# The paper's net has 61 million; a config over this is a typo, not a net to allocate.
MAX_PARAMETERS = 1_000_000_000


def size_estimate(m: ModelConfig) -> tuple[int, int]:
    """(parameters, activation values per image) of the config's net."""
    p = plan(m)
    return p.parameters(), p.activations()


def device_memory(placement: Placement) -> int:
    """Bytes of memory the placement's devices have together (the host's RAM for the CPU)."""
    devices = {placement.a, placement.b}
    if placement.a.type == "cuda":
        return sum(torch.cuda.get_device_properties(d).total_memory for d in devices)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_size(cfg: Config, placement: Placement) -> None:
    """Refuse a net too large to exist, or whose training step at data.batch_size would not fit
    the devices' memory (weights, gradients, velocities, and activations kept for backward,
    counted twice for their gradients: an estimate, low rather than high)."""
    params, acts = size_estimate(cfg.model)
    what = "model.conv_widths, model.fc_widths, model.input_size, model.num_classes"
    if params > MAX_PARAMETERS:
        raise ConfigError(f"the config's net would have {params:,} parameters, over the limit of "
                          f"{MAX_PARAMETERS:,} (the paper's has 60,965,224); check {what}")
    side = cfg.model.input_size
    need = 4 * (3 * params + 2 * cfg.data.batch_size * (acts + 3 * side * side))
    have = device_memory(placement)
    if need > have:
        raise ConfigError(f"the config's net needs about {need / 2 ** 30:,.1f} GiB for a training step of "
                          f"data.batch_size={cfg.data.batch_size} ({params:,} parameters), more than the "
                          f"{have / 2 ** 30:,.1f} GiB of {placement}; check data.batch_size and {what}")
