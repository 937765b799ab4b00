"""The paper's optimiser and learning-rate schedule (section 5).

The update rule is
    v <- momentum * v - weight_decay * lr * w - lr * grad
    w <- w + v
which differs from torch.optim.SGD (v <- m v + g + wd w; w <- w - lr v) whenever the learning
rate changes: here the velocity already carries the old rate, there it is rescaled by the new one.
"""
from __future__ import annotations

from typing import Iterable

import torch

from .config import LayerStep, OptimConfig, ScheduleConfig


class PaperSGD(torch.optim.Optimizer):
    """SGD with the paper's momentum rule. Each parameter group may carry `lr_mult` (the 2012
    code's bias learning rate); its lr is base lr x lr_mult. Parameters may live on any device:
    every update is done on the parameter's own device. A group whose rate is 0 is frozen: no
    update, no weight decay, its velocity kept (the 2012 code skips such weights: weights.cu:148,
    layer.cu:582). `foreach` does each step of the rule for all tensors of a device and dtype at
    once (torch._foreach_*): the same operations in the same order on each tensor, in a few
    launches instead of four per tensor."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4, foreach: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, lr_mult=1.0,
                                      scheduled=True, layer=None, kind=None))
        self.foreach = foreach

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
            if lr == 0:
                continue
            live = [p for p in group["params"] if p.grad is not None]
            for p in live:
                if "velocity" not in self.state[p]:
                    self.state[p]["velocity"] = torch.zeros_like(p)
            if not self.foreach:
                for p in live:
                    v = self.state[p]["velocity"]
                    v.mul_(m).add_(p, alpha=-wd * lr).add_(p.grad, alpha=-lr)
                    p.add_(v)
                continue
            by_kind: dict[tuple, list] = {}
            for p in live:
                by_kind.setdefault((p.device, p.dtype), []).append(p)
            for ps in by_kind.values():
                vs, grads = [self.state[p]["velocity"] for p in ps], [p.grad for p in ps]
                torch._foreach_mul_(vs, m)
                torch._foreach_add_(vs, ps, alpha=-wd * lr)
                torch._foreach_add_(vs, grads, alpha=-lr)
                torch._foreach_add_(ps, vs)
        return loss

    def set_base_lr(self, base_lr: float) -> None:
        """Every group the schedule drives learns at base_lr x its lr_mult."""
        for group in self.param_groups:
            if group.get("scheduled", True):
                group["lr"] = base_lr * group["lr_mult"]


def layer_of(param_name: str) -> str:
    """'col_a.conv1.weight' -> 'conv1', 'fc8.bias' -> 'fc8' ('' for a bare module's own)."""
    parts = param_name.split(".")
    return parts[-2] if len(parts) > 1 else ""


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig, own_groups: Iterable[str] = ()) -> PaperSGD:
    """Weights at the base rate, biases at base x bias_lr_mult (held there, not scheduled, with
    cfg.bias_lr_scheduled false; without weight decay with cfg.bias_weight_decay false). The
    layers named in `own_groups` (those with layer steps) get groups of their own."""
    own = set(own_groups)
    named = list(model.named_parameters())
    groups = []
    for layer in [None, *sorted(own)]:
        for kind in ("weight", "bias"):
            params = [p for n, p in named if n.rsplit(".", 1)[-1] == kind
                      and (layer_of(n) if layer_of(n) in own else None) == layer]
            if not params:
                continue
            bias = kind == "bias"
            mult = cfg.bias_lr_mult if bias else 1.0
            groups.append({"params": params, "layer": layer, "kind": kind, "lr_mult": mult,
                           "scheduled": cfg.bias_lr_scheduled or not bias, "lr": cfg.lr * mult,
                           "initial_lr": cfg.lr * mult,
                           "weight_decay": cfg.weight_decay if cfg.bias_weight_decay or not bias else 0.0})
    if sum(len(g["params"]) for g in groups) != len(named):
        raise ValueError("every parameter must be a layer's weight or bias")
    return PaperSGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=cfg.foreach)


class LRSchedule:
    """Divide the rate by 1/factor when validation error stops improving (the paper: "when
    the validation error rate stopped improving", three times) or at fixed epochs; and the
    per-layer steps of cfg.layer_steps (the 2012 code's conv1 rate cut and freeze)."""

    def __init__(self, optimizer: PaperSGD, cfg: ScheduleConfig, base_lr: float):
        self.optimizer, self.cfg, self.base_lr = optimizer, cfg, base_lr
        self.drops = 0
        self.best = float("inf")
        self.stale = 0
        self.smoothed: float | None = None
        self.epoch = 0
        # The error stopped improving after the last cut (schedule.end_on_plateau ends the run).
        self.done = False
        self._apply()

    @property
    def lr(self) -> float:
        return self.base_lr * self.cfg.factor ** self.drops

    def step(self, epoch: int, val_error: float | None = None) -> bool:
        """Call after each finished epoch (1-based). Returns True when the rate was divided."""
        cfg = self.cfg
        self.epoch = epoch
        if cfg.kind == "fixed":
            wanted = min(cfg.max_drops, sum(1 for e in cfg.milestones if e <= epoch))
        else:
            if val_error is None:
                raise ValueError("the plateau schedule needs the validation error")
            s = cfg.smoothing
            self.smoothed = val_error if self.smoothed is None else s * self.smoothed + (1 - s) * val_error
            if self.smoothed < self.best * (1 - cfg.min_delta):
                self.best, self.stale = self.smoothed, 0
            else:
                self.stale += 1
            wanted = self.drops
            if self.stale >= cfg.patience and epoch >= cfg.min_epochs:
                if self.drops < cfg.max_drops:
                    wanted, self.stale = self.drops + 1, 0
                else:
                    self.done = True
        dropped = wanted != self.drops
        self.drops = wanted
        self._apply()
        return dropped

    def _apply(self) -> None:
        self.optimizer.set_base_lr(self.lr)
        for group in self.optimizer.param_groups:
            if not group.get("scheduled", True):
                group["lr"] = group["initial_lr"]
            rate = layer_rate(self.cfg.layer_steps, group.get("layer"), group.get("kind"), self.epoch)
            if rate is not None:
                group["lr"] = rate

    def state_dict(self) -> dict:
        return {"drops": self.drops, "best": self.best, "stale": self.stale, "base_lr": self.base_lr,
                "smoothed": self.smoothed, "epoch": self.epoch, "done": self.done}

    def load_state_dict(self, state: dict) -> None:
        self.drops, self.best, self.stale = int(state["drops"]), float(state["best"]), int(state["stale"])
        self.base_lr = float(state["base_lr"])
        # Written before these were kept: no smoothing history, and no layer step can be due.
        self.smoothed = state.get("smoothed")
        self.epoch = int(state.get("epoch", 0))
        self.done = bool(state.get("done", False))
        self._apply()


def layer_rate(steps: list[LayerStep], layer: str | None, kind: str | None, epoch: int) -> float | None:
    """The absolute rate the latest due step sets for a layer's weights or biases, or None."""
    rate = None
    for step in sorted(steps, key=lambda s: s.epoch):
        value = step.weight_lr if kind == "weight" else step.bias_lr
        if step.layer == layer and step.epoch <= epoch and value is not None:
            rate = value
    return rate
