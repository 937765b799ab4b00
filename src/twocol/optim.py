"""The paper's optimiser and learning-rate schedule (section 5).

The update rule is
    v <- momentum * v - weight_decay * lr * w - lr * grad
    w <- w + v
which differs from torch.optim.SGD (v <- m v + g + wd w; w <- w - lr v) whenever the learning
rate changes: here the velocity already carries the old rate, there it is rescaled by the new one.
"""
from __future__ import annotations

import torch

from .config import OptimConfig, ScheduleConfig


class PaperSGD(torch.optim.Optimizer):
    """SGD with the paper's momentum rule. Each parameter group may carry `lr_mult` (the 2012
    code's bias learning rate); its lr is base lr x lr_mult. Parameters may live on any device:
    every update is done on the parameter's own device. `foreach` does each step of the rule
    for all tensors of a device and dtype at once (torch._foreach_*): the same operations in
    the same order on each tensor, in a few launches instead of four per tensor."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4, foreach: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, lr_mult=1.0))
        self.foreach = foreach

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
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
        for group in self.param_groups:
            group["lr"] = base_lr * group["lr_mult"]


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> PaperSGD:
    """Weights at the base rate, biases at base x bias_lr_mult."""
    weights = [p for n, p in model.named_parameters() if not n.endswith("bias")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = PaperSGD([{"params": weights, "lr_mult": 1.0},
                    {"params": biases, "lr_mult": cfg.bias_lr_mult}],
                   lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=cfg.foreach)
    opt.set_base_lr(cfg.lr)
    return opt


class LRSchedule:
    """Divide the rate by 1/factor when validation error stops improving (the paper: "when
    the validation error rate stopped improving", three times) or at fixed epochs."""

    def __init__(self, optimizer: PaperSGD, cfg: ScheduleConfig, base_lr: float):
        self.optimizer, self.cfg, self.base_lr = optimizer, cfg, base_lr
        self.drops = 0
        self.best = float("inf")
        self.stale = 0

    @property
    def lr(self) -> float:
        return self.base_lr * self.cfg.factor ** self.drops

    def step(self, epoch: int, val_error: float | None = None) -> bool:
        """Call after each finished epoch (1-based). Returns True when the rate was divided."""
        cfg = self.cfg
        if cfg.kind == "fixed":
            wanted = min(cfg.max_drops, sum(1 for e in cfg.milestones if e <= epoch))
        else:
            if val_error is None:
                raise ValueError("the plateau schedule needs the validation error")
            if val_error < self.best:
                self.best, self.stale = val_error, 0
            else:
                self.stale += 1
            wanted = self.drops
            if self.stale >= cfg.patience and self.drops < cfg.max_drops:
                wanted, self.stale = self.drops + 1, 0
        dropped = wanted != self.drops
        self.drops = wanted
        self.optimizer.set_base_lr(self.lr)
        return dropped

    def state_dict(self) -> dict:
        return {"drops": self.drops, "best": self.best, "stale": self.stale, "base_lr": self.base_lr}

    def load_state_dict(self, state: dict) -> None:
        self.drops, self.best, self.stale = int(state["drops"]), float(state["best"]), int(state["stale"])
        self.base_lr = float(state["base_lr"])
        self.optimizer.set_base_lr(self.lr)
