"""The reference the two-column net is checked and timed against: the same net on one device
with grouped convolutions (as most AlexNet code writes it), holding no links and no columns.

Tests use it as the oracle (a two-column net must compute exactly what it computes, in
float64); the throughput benchmark uses it as the baseline of the model-parallel overhead.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .config import ModelConfig
from .layers import plan
from .model import ActNorm, TwoColumnNet, layer_modules


class GroupedNet(nn.Module):
    """The single-device equivalent of TwoColumnNet: one module per layer of the plan holding
    both columns' halves, grouped (groups=2) where no link feeds the layer and dense where one
    does (conv3 and the fc layers in the paper's net), LRN applied to each half separately."""

    def __init__(self, m: ModelConfig, device: torch.device):
        super().__init__()
        self.plan = plan(m)
        for layer in self.plan.column_layers:
            for name, module in layer_modules(layer, m, both_columns=True).items():
                setattr(self, name, module)
        self.fc8 = nn.Linear(self.plan["fc8"].inputs, m.num_classes)
        self.to(device)

    def forward(self, x):
        for layer in self.plan.column_layers:
            for name in layer.modules:
                mod = getattr(self, name)
                # The columns normalise over their own channels only: fold the halves into the batch.
                x = self._per_half(mod, x) if isinstance(mod, ActNorm) else mod(x)
            if layer.name == "conv5":
                x = torch.flatten(x, 1)
        return self.fc8(x)

    @staticmethod
    def _per_half(norm, x):
        n, c, h, w = x.shape
        return norm(x.reshape(n * 2, c // 2, h, w)).reshape(n, c, h, w)

    @torch.no_grad()
    def copy_from(self, net: TwoColumnNet) -> "GroupedNet":
        """Take the two-column net's weights: output channels [A's, B's] in every layer."""
        a, b = net.col_a, net.col_b
        for layer in self.plan.column_layers:
            mine = getattr(self, layer.name)
            for attr in ("weight", "bias"):
                parts = [getattr(getattr(c, layer.name), attr).to(mine.weight.device) for c in (a, b)]
                getattr(mine, attr).copy_(torch.cat(parts, 0))
        self.fc8.weight.copy_(net.fc8.weight)
        self.fc8.bias.copy_(net.fc8.bias)
        return self
