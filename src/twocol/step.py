"""One training step, the only one: forward under the run's autocast, cross entropy on float32
logits, backward, the update. Training (train.py), `twocol profile` (profile.py) and the
benchmarks (bench/throughput.py, bench/e2e.py) all call `train_step`, so that what a benchmark
times is what training runs.

The model is a net of columns (it takes the batch as ColumnInputs, each column's half on its
device, or as one tensor on column A's device) or a single module (a tensor on its device); the
step hands the images over as given and the labels must be on the logits' device.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


def autocast(amp: str, device: torch.device, cache: bool = True):
    """The forward pass's precision: "bf16" is torch.autocast(bfloat16), "off" plain float32.
    cache=False turns off autocast's cache of cast weights, which a CUDA graph capture needs
    (the cache would keep tensors made during the capture and freed after it)."""
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)
    if amp != "off":
        raise ValueError(f"amp must be 'off' or 'bf16', got {amp!r}")
    return contextlib.nullcontext()


def _unmarked(_part: str):
    return contextlib.nullcontext()


def train_step(model, optimizers, images, labels: torch.Tensor, amp: str, device: torch.device, *,
               cast_cache: bool = True, mark=_unmarked) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, loss, backward, update; returns (logits, loss), not detached.

    optimizers: one optimiser, or {name: optimiser} (twocol profile gives each column its own so
    that their updates can be told apart; each is stepped in order). device: where autocast
    applies (column A's). mark(part) -> a context manager around the loss ("loss") and each
    update ("update:<name>", name "" for a lone optimiser), for the profiler's ranges."""
    opts = optimizers if isinstance(optimizers, dict) else {"": optimizers}
    with autocast(amp, device, cast_cache):
        logits = model(images)
    with mark("loss"):
        loss = F.cross_entropy(logits.float(), labels)
    for opt in opts.values():
        opt.zero_grad(set_to_none=True)
    loss.backward()
    for name, opt in opts.items():
        with mark(f"update:{name}"):
            opt.step()
    return logits, loss
