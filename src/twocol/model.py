"""The two-column AlexNet, read off the paper's Figure 2 (sizes: docs/design.md).

Each Column holds one half of every layer and lives on one device. Data crosses between the
columns only through the four named links: conv3 (both pool2 outputs), fc6 (both pool5
outputs), fc7 (both fc6 outputs) and fc8 (both fc7 outputs, gathered on column A's device,
where fc8 and the loss live).

Both nets take ColumnInputs (inputs.py): the batch on each column's device, put there by the
data pipeline; a plain tensor only where every column runs on its device.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import ops, sim
from .config import Config, ModelConfig
from .devices import Placement
from .errors import ConfigError
from .inputs import ColumnInputs, column_inputs
from .links import ColumnRuntime, Link, streams_follow_caller


def conv1_geometry(m: ModelConfig) -> tuple[int, int]:
    """(output side, right/bottom zero padding) of conv1.

    The 2012 code computes conv1's output as 1 + ceil((224 - 11) / 4) = 55, which only works
    if the image is zero-padded by 3 pixels on the right and bottom; we do the same, so a
    224x224 input gives 55x55 as in the paper's figure."""
    k, s, n = m.conv1.kernel, m.conv1.stride, m.input_size
    out = 1 + math.ceil((n - k) / s)
    return out, (out - 1) * s + k - n


def pool_side(n: int, kernel: int, stride: int, round_up: bool) -> int:
    """Output side of a max pool with no padding, as nn.MaxPool2d(kernel, stride, ceil_mode=round_up)
    computes it. Rounding up is the 2012 code's rule, 1 + ceil((n - kernel) / stride)
    (cuda-convnet layer.py:1163-1164); PyTorch also drops a last window that would start
    outside the map, which only happens when the stride exceeds the kernel."""
    if not round_up:
        return (n - kernel) // stride + 1
    out = -(-(n - kernel) // stride) + 1
    return out - 1 if (out - 1) * stride >= n else out


def feature_sides(m: ModelConfig) -> dict[str, int]:
    """Spatial side of every layer's output (square maps)."""
    def check(name, out):
        if out < 1:
            raise ConfigError(f"model.input_size={m.input_size} is too small: {name} would be empty")
        return out

    def pool(name, n):
        return check(name, pool_side(n, m.pool.kernel, m.pool.stride, m.pool.round_up))

    def conv(name, n, k):
        return check(name, n + 2 * getattr(m.padding, name) - k + 1)

    sides = {"conv1": conv1_geometry(m)[0]}
    sides["pool1"] = pool("pool1", sides["conv1"])
    sides["conv2"] = conv("conv2", sides["pool1"], 5)
    sides["pool2"] = pool("pool2", sides["conv2"])
    last = sides["pool2"]
    for name in conv_inputs(m, 1):  # conv3..conv5, less those model.layers_off removes
        last = sides[name] = conv(name, last, 3)
    sides["pool5"] = pool("pool5", last)
    return sides


def conv_inputs(m: ModelConfig, columns: int) -> dict[str, int]:
    """Input channels of each of conv3, conv4, conv5 that the config keeps, in one column of a
    net of `columns` columns: the width of the layer before it, doubled for conv3 in the
    two-column net (the conv3 link brings the other column's pool2). A layer of model.layers_off
    is gone: the next one reads what it read, from its own column only (without conv3 there is
    no conv3 link, and the columns meet only at the fc links)."""
    width, out = m.conv_widths[1], {}
    for i, name in ((2, "conv3"), (3, "conv4"), (4, "conv5")):
        if name in m.layers_off:
            continue
        out[name] = width * (columns if name == "conv3" else 1)
        width = m.conv_widths[i]
    return out


def max_pool(m: ModelConfig) -> nn.MaxPool2d:
    return nn.MaxPool2d(m.pool.kernel, m.pool.stride, ceil_mode=m.pool.round_up)


# The paper's net has 61 million; a config over this is a typo, not a net to allocate.
MAX_PARAMETERS = 1_000_000_000


def size_estimate(m: ModelConfig) -> tuple[int, int]:
    """(parameters, activation values per image) of the config's net, from its shapes alone,
    so that an absurd config is refused before anything is allocated."""
    sides = feature_sides(m)
    w1, w2, w3, w4, w5 = m.conv_widths
    f6, f7 = m.fc_widths
    cols = 2 if m.arch == "twocol" else 1  # a two-column layer sees both columns' inputs
    k = m.conv1.kernel
    widths = {"conv3": w3, "conv4": w4, "conv5": w5}
    middle = conv_inputs(m, cols)
    column = (3 * k * k * w1 + w1 + w1 * w2 * 25 + w2 + sum(c * widths[n] * 9 + widths[n] for n, c in middle.items())
              + cols * w5 * sides["pool5"] ** 2 * f6 + f6 + cols * f6 * f7 + f7)
    params = cols * column + cols * f7 * m.num_classes + m.num_classes
    acts = cols * (w1 * (sides["conv1"] ** 2 + sides["pool1"] ** 2) + w2 * (sides["conv2"] ** 2 + sides["pool2"] ** 2)
                   + sum(widths[n] * sides[n] ** 2 for n in middle) + w5 * sides["pool5"] ** 2 + f6 + f7) + m.num_classes
    return params, acts


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


class ActNorm(nn.Module):
    """Activation + LRN (+ the 2012 code's spatial norm) after conv1 or conv2."""

    def __init__(self, m: ModelConfig, layer: int):
        super().__init__()
        self.activation, self.lrn = m.activation, m.lrn
        # The 2012 code's layer 1 is conv -> LRN -> pool -> ReLU; max-pool and ReLU commute,
        # so LRN -> ReLU -> pool computes the same thing.
        self.order = m.lrn.layer1_order if layer == 1 else "relu_lrn"
        self.spatial = m.spatial_norm if layer == 2 and m.spatial_norm.enabled else None

    def forward(self, x):
        lrn = self.lrn
        if not lrn.enabled:
            x = torch.relu(x) if self.activation == "relu" else torch.tanh(x)
        elif self.activation == "relu":
            x = ops.relu_lrn(x, lrn.size, lrn.k, lrn.alpha, lrn.beta, self.order, lrn.alpha_convention)
        else:
            norm = lambda t: ops.lrn_reference(t, lrn.size, lrn.k, lrn.alpha, lrn.beta, lrn.alpha_convention)
            x = norm(torch.tanh(x)) if self.order == "relu_lrn" else torch.tanh(norm(x))
        if self.spatial is not None:
            x = ops.spatial_norm(x, self.spatial.size, self.spatial.scale, self.spatial.pow)
        return x


class Dropout(nn.Module):
    """Dropout at rate `rate` by `convention` (docs/design.md, section 4).

    "paper" (section 4.2; the 2012 code's dropout layer, src/layer.cu:1126-1135): in training
    each output is kept with probability keep = 1 - rate and zeroed otherwise, unscaled; at
    test (eval mode) every output is multiplied by keep. "inverted" (torch.nn.Dropout): the
    kept outputs are divided by keep in training and nothing happens at test."""

    def __init__(self, rate: float, convention: str):
        super().__init__()
        self.keep, self.convention = 1.0 - rate, convention

    def forward(self, x):
        if self.keep == 1.0:
            return x
        if self.convention == "inverted":
            return F.dropout(x, 1.0 - self.keep, self.training)
        if self.training:
            # The same draws as F.dropout's mask for the same generator state.
            return x * torch.empty_like(x).bernoulli_(self.keep)
        return x * self.keep

    def extra_repr(self) -> str:
        return f"keep={self.keep:g}, convention={self.convention}"


class Column(nn.Module):
    """One column of a net of `columns` columns: conv1..conv5 (less any of model.layers_off,
    which are None) and fc6, fc7. Input widths of conv3, fc6 and fc7 include what arrives from
    the other column (if any)."""

    def __init__(self, m: ModelConfig, columns: int):
        super().__init__()
        w1, w2, w3, w4, w5 = m.conv_widths
        f6, f7 = m.fc_widths
        middle = conv_inputs(m, columns)
        fc6_in, fc7_in = columns * w5 * feature_sides(m)["pool5"] ** 2, columns * f6
        act = nn.ReLU if m.activation == "relu" else nn.Tanh
        self.conv1_pad = conv1_geometry(m)[1]
        self.conv1 = nn.Conv2d(3, w1, m.conv1.kernel, stride=m.conv1.stride)
        self.norm1 = ActNorm(m, 1)
        pad = m.padding
        self.pool1 = max_pool(m)
        self.conv2 = nn.Conv2d(w1, w2, 5, padding=pad.conv2)
        self.norm2 = ActNorm(m, 2)
        self.pool2 = max_pool(m)
        for name, out in (("conv3", w3), ("conv4", w4), ("conv5", w5)):
            on = name in middle
            setattr(self, name, nn.Conv2d(middle[name], out, 3, padding=getattr(pad, name)) if on else None)
            setattr(self, "act" + name[-1], act() if on else None)
        self.pool5 = max_pool(m)
        self.fc6 = nn.Linear(fc6_in, f6)
        self.act6 = act()
        self.drop6 = Dropout(m.dropout, m.dropout_convention)
        self.fc7 = nn.Linear(fc7_in, f7)
        self.act7 = act()
        self.drop7 = Dropout(m.dropout, m.dropout_convention)

    def to_pool2(self, x):
        x = F.pad(x, (0, self.conv1_pad, 0, self.conv1_pad))
        x = self.pool1(self.norm1(self.conv1(x)))
        return self.pool2(self.norm2(self.conv2(x)))

    def to_pool5(self, x):
        for conv, act in ((self.conv3, self.act3), (self.conv4, self.act4), (self.conv5, self.act5)):
            if conv is not None:
                x = act(conv(x))
        return torch.flatten(self.pool5(x), 1)

    def to_fc6(self, x):
        return self.drop6(self.act6(self.fc6(x)))

    def to_fc7(self, x):
        return self.drop7(self.act7(self.fc7(x)))


class TwoColumnNet(nn.Module):
    """The paper's net: column A on placement.a, column B on placement.b, four links."""

    LINKS = ("conv3", "fc6", "fc7", "fc8")

    def __init__(self, m: ModelConfig, placement: Placement):
        super().__init__()
        self.placement = placement
        self.col_a = Column(m, 2)
        self.col_b = Column(m, 2)
        self.fc8 = nn.Linear(2 * m.fc_widths[1], m.num_classes)
        # Without conv3 (model.layers_off) nothing crosses before fc6: no conv3 link.
        self.links = {name: Link(name) for name in self.LINKS if name != "conv3" or self.col_a.conv3 is not None}
        self.run_a = ColumnRuntime("A", placement.a)
        self.run_b = ColumnRuntime("B", placement.b)

    def place(self) -> "TwoColumnNet":
        """Move each column to its device and tag its parameters (after init, on the CPU)."""
        self.col_a.to(self.placement.a)
        self.fc8.to(self.placement.a)
        self.col_b.to(self.placement.b)
        sim.tag_module(self.col_a, "A")
        sim.tag_module(self.fc8, "A")
        sim.tag_module(self.col_b, "B")
        return self

    def columns(self) -> list[tuple[str, Column]]:
        return [("A", self.col_a), ("B", self.col_b)]

    def use_streams(self, enabled: bool = True) -> None:
        """Give each column its own CUDA stream, so the two columns' kernels can overlap."""
        for run in (self.run_a, self.run_b):
            run.use_stream(enabled)

    def exchange(self, name: str, xa, xb):
        """A link used by both columns: each gets [A's part, B's part] on its own device (and,
        with column streams, joined on its own stream)."""
        link, a, b = self.links[name], self.run_a, self.run_b
        with a:
            to_a = torch.cat([xa, link.send(xb, b, a)], 1)
        with b:
            to_b = torch.cat([link.send(xa, a, b), xb], 1)
        return to_a, to_b

    def forward(self, x: ColumnInputs | torch.Tensor):
        x = column_inputs(x, self.placement)
        with streams_follow_caller((self.run_a, self.run_b), x.tensors()) as handed_back:
            fc8_in = self._last_hidden(x)
            with self.run_a:
                return handed_back(self.fc8(fc8_in))

    def last_hidden(self, x: ColumnInputs | torch.Tensor):
        """Both columns' fc7 outputs gathered on column A (the fc8 link): the paper's 4096-d
        feature of section 6.1 / Figure 4."""
        x = column_inputs(x, self.placement)
        with streams_follow_caller((self.run_a, self.run_b), x.tensors()) as handed_back:
            return handed_back(self._last_hidden(x))

    def _last_hidden(self, x: ColumnInputs):
        a, b = self.run_a, self.run_b
        # Each column reads its own copy of the batch, on its own device: the pipeline put it
        # there (nothing crosses between the columns before the conv3 link).
        with a:
            pool2_a = self.col_a.to_pool2(x.a)
        with b:
            pool2_b = self.col_b.to_pool2(x.b)
        conv3_in_a, conv3_in_b = self.exchange("conv3", pool2_a, pool2_b) if "conv3" in self.links else (pool2_a, pool2_b)
        with a:
            pool5_a = self.col_a.to_pool5(conv3_in_a)
        with b:
            pool5_b = self.col_b.to_pool5(conv3_in_b)
        fc6_in_a, fc6_in_b = self.exchange("fc6", pool5_a, pool5_b)
        with a:
            fc6_a = self.col_a.to_fc6(fc6_in_a)
        with b:
            fc6_b = self.col_b.to_fc6(fc6_in_b)
        fc7_in_a, fc7_in_b = self.exchange("fc7", fc6_a, fc6_b)
        with a:
            fc7_a = self.col_a.to_fc7(fc7_in_a)
        with b:
            fc7_b = self.col_b.to_fc7(fc7_in_b)
        with a:
            return torch.cat([fc7_a, self.links["fc8"].send(fc7_b, b, a)], 1)

    def link_bytes(self) -> dict[str, dict[str, int]]:
        return {n: {"forward": l.bytes_forward, "backward": l.bytes_backward} for n, l in self.links.items()}

    def reset_link_bytes(self) -> None:
        for link in self.links.values():
            link.reset()


class OneColumnNet(nn.Module):
    """The paper's one-GPU comparison net (footnote; the 2012 code's layers-145-half.cfg):
    one column whose conv3 and fc6 see only its own features, on one device, no links."""

    def __init__(self, m: ModelConfig, placement: Placement):
        super().__init__()
        self.placement = placement
        self.col_a = Column(m, 1)
        self.fc8 = nn.Linear(m.fc_widths[1], m.num_classes)
        self.run_a = ColumnRuntime("A", placement.a)
        self.links: dict[str, Link] = {}

    def place(self) -> "OneColumnNet":
        self.to(self.placement.a)
        sim.tag_module(self, "A")
        return self

    def columns(self) -> list[tuple[str, Column]]:
        return [("A", self.col_a)]

    def use_streams(self, enabled: bool = True) -> None:
        pass  # one column: the caller's stream is the column's stream

    def forward(self, x: ColumnInputs | torch.Tensor):
        h = self.last_hidden(x)
        with self.run_a:
            return self.fc8(h)

    def last_hidden(self, x: ColumnInputs | torch.Tensor):
        x = column_inputs(x, self.placement).a
        with self.run_a:
            c = self.col_a
            return c.to_fc7(c.to_fc6(c.to_pool5(c.to_pool2(x))))

    def link_bytes(self) -> dict[str, dict[str, int]]:
        return {}

    def reset_link_bytes(self) -> None:
        pass


def init_weights(net: nn.Module, cfg: Config) -> None:
    """Initialise every conv and linear layer by the config's scheme (docs/design.md, sections 2 and 5)."""
    ini = cfg.init
    for name, mod in net.named_modules():
        if not isinstance(mod, (nn.Conv2d, nn.Linear)):
            continue
        layer = name.rsplit(".", 1)[-1]
        if ini.scheme == "paper":
            nn.init.normal_(mod.weight, 0.0, ini.layer_std.get(layer, ini.weight_std))
            nn.init.constant_(mod.bias, 1.0 if layer in ini.bias_one else 0.0)
        elif layer in ini.layer_std:
            nn.init.normal_(mod.weight, 0.0, ini.layer_std[layer])
            nn.init.zeros_(mod.bias)
        else:
            nonlin = "relu" if cfg.model.activation == "relu" else "tanh"
            nn.init.kaiming_normal_(mod.weight, nonlinearity=nonlin)
            nn.init.zeros_(mod.bias)


def build_model(cfg: Config, placement: Placement, seed: int | None = None) -> nn.Module:
    """Build the config's net on the CPU, initialise it (deterministically from `seed`, so
    every placement starts from the same weights) and move each column to its device."""
    check_size(cfg, placement)
    cls = TwoColumnNet if cfg.model.arch == "twocol" else OneColumnNet
    net = cls(cfg.model, placement)
    gen_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    init_weights(net, cfg)
    if seed is not None:
        torch.random.set_rng_state(gen_state)
    return net.place()


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
