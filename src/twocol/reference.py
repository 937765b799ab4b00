"""The reference the two-column net is checked and timed against: the same net on one device
with grouped convolutions (as most AlexNet code writes it), holding no links and no columns.

Tests use it as the oracle (a two-column net must compute exactly what it computes, in
float64); the throughput benchmark uses it as the baseline of the model-parallel overhead.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .model import ActNorm, Dropout, TwoColumnNet, conv1_geometry, conv_inputs, feature_sides, max_pool


class GroupedNet(nn.Module):
    """The single-device equivalent of TwoColumnNet: one conv per layer, groups=2 for conv2,
    conv4 and conv5, dense conv3 and fc layers, and LRN applied to each half separately.
    The reference for tests and the baseline of the model-parallel overhead benchmark."""

    def __init__(self, m: ModelConfig, device: torch.device):
        super().__init__()
        w, f = m.conv_widths, m.fc_widths
        side5 = feature_sides(m)["pool5"]
        act = nn.ReLU if m.activation == "relu" else nn.Tanh
        self.conv1_pad = conv1_geometry(m)[1]
        self.conv1 = nn.Conv2d(3, 2 * w[0], m.conv1.kernel, stride=m.conv1.stride)
        self.norm1 = ActNorm(m, 1)
        pad = m.padding
        self.conv2 = nn.Conv2d(2 * w[0], 2 * w[1], 5, padding=pad.conv2, groups=2)
        self.norm2 = ActNorm(m, 2)
        self.pool = max_pool(m)
        # conv3 is dense (both columns' pool2), the others grouped; a layer of model.layers_off is None.
        middle = conv_inputs(m, 2)
        for i, name in ((2, "conv3"), (3, "conv4"), (4, "conv5")):
            groups = 1 if name == "conv3" else 2
            setattr(self, name, nn.Conv2d(middle[name] * groups, 2 * w[i], 3,
                                          padding=getattr(pad, name), groups=groups) if name in middle else None)
        self.fc6 = nn.Linear(2 * w[4] * side5 ** 2, 2 * f[0])
        self.fc7 = nn.Linear(2 * f[0], 2 * f[1])
        self.fc8 = nn.Linear(2 * f[1], m.num_classes)
        self.act = act()
        self.drop = Dropout(m.dropout, m.dropout_convention)
        self.to(device)

    @staticmethod
    def _per_half(norm, x):
        # The columns normalise over their own channels only: fold the halves into the batch.
        n, c, h, w = x.shape
        return norm(x.reshape(n * 2, c // 2, h, w)).reshape(n, c, h, w)

    def forward(self, x):
        x = F.pad(x, (0, self.conv1_pad, 0, self.conv1_pad))
        x = self.pool(self._per_half(self.norm1, self.conv1(x)))
        x = self.pool(self._per_half(self.norm2, self.conv2(x)))
        for conv in (self.conv3, self.conv4, self.conv5):
            if conv is not None:
                x = self.act(conv(x))
        x = torch.flatten(self.pool(x), 1)
        x = self.drop(self.act(self.fc6(x)))
        x = self.drop(self.act(self.fc7(x)))
        return self.fc8(x)

    @torch.no_grad()
    def copy_from(self, net: TwoColumnNet) -> "GroupedNet":
        """Take the two-column net's weights: output channels [A's, B's] in every layer."""
        a, b = net.col_a, net.col_b
        for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"):
            mine = getattr(self, name)
            if mine is None:
                continue
            for attr in ("weight", "bias"):
                parts = [getattr(getattr(c, name), attr).to(mine.weight.device) for c in (a, b)]
                getattr(mine, attr).copy_(torch.cat(parts, 0))
        self.fc8.weight.copy_(net.fc8.weight)
        self.fc8.bias.copy_(net.fc8.bias)
        return self
