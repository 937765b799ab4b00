"""The plan of a config's net, derived once from its model keys: which of the paper's eight
layers it has, in order, what one column's part of each reads (its own column's channels, and
those a link brings from the other column), what it writes, the sides of its maps and the
modules that make it. The model (model.py) and its grouped reference build from it;
`twocol describe`, the profiler's spans, the cost model, the timeline and the kernel benchmark
read it. A layer is added or removed here, nowhere else.

The paper's net (Figure 2; sizes in docs/design.md), per column:

    conv1  11x11/4, then ReLU+LRN (norm1), max pool (pool1)      own column
    conv2  5x5, pad 2, then ReLU+LRN (norm2), max pool (pool2)   own column
    conv3  3x3, pad 1, ReLU (act3)                               both columns: the conv link
    conv4  3x3, pad 1, ReLU (act4)                               own column
    conv5  3x3, pad 1, ReLU (act5), max pool (pool5)             own column
    fc6    ReLU (act6), dropout (drop6)                          both columns' pool5
    fc7    ReLU (act7), dropout (drop7)                          both columns' fc6
    fc8    on column A only                                      both columns' fc7

A link is named by the layer it feeds. model.layers_off removes middle conv layers (conv2,
conv3, conv4: the depth claim of section 7) from every column: the next layer reads what the
removed one read, and a removed layer's pool stays where it was (without conv2, conv3 reads
pool2 of pool1). model.conv_link names the conv layer that reads both columns (the paper's
conv3; the 2012 code also tried conv4, and none).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .errors import ConfigError

# The paper's eight layers in forward order (fc8 lives on column A only).
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
# What model.layers_off may name: the middle conv layers.
REMOVABLE = ("conv2", "conv3", "conv4")
# What model.conv_link may name besides "none".
CONV_LINKS = ("conv3", "conv4", "conv5")


def next_conv(name: str, off) -> str:
    """The conv layer after `name` that may read both columns and is not in `off`
    (model.layers_off), or "none": where the link goes when `name` is removed."""
    later = CONV_LINKS[CONV_LINKS.index(name) + 1:] if name in CONV_LINKS else ()
    return next((c for c in later if c not in off), "none")

# Each conv layer: (kernel, stride) where fixed by the paper (conv1's come from the config), and
# the modules after the conv in its column.
_AFTER = {"conv1": ("norm1", "pool1"), "conv2": ("norm2", "pool2"), "conv3": ("act3",), "conv4": ("act4",),
          "conv5": ("act5", "pool5"), "fc6": ("act6", "drop6"), "fc7": ("act7", "drop7"), "fc8": ()}
_KERNEL = {"conv2": 5, "conv3": 3, "conv4": 3, "conv5": 3}


@dataclass(frozen=True)
class Layer:
    """One layer as one column holds it (fc8: as column A holds it)."""
    name: str
    own_in: int               # input channels (conv) or features (fc) from its own column
    link_in: int              # those the link brings from the other column (0: no link feeds it)
    out: int                  # output channels or features
    modules: tuple[str, ...]  # the column's modules that make it, in order (conv1, norm1, pool1)
    kernel: int = 1
    stride: int = 1
    padding: int = 0          # on every side (conv1: see pad_right_bottom)
    pad_right_bottom: int = 0  # conv1's extra zeros on the right and bottom (conv1_geometry)
    side_out: int = 1         # side of the conv's output, before any pool of its block (fc: 1)

    @property
    def link(self) -> str | None:
        """The link that feeds this layer (named after it), if any."""
        return self.name if self.link_in else None

    @property
    def inputs(self) -> int:
        return self.own_in + self.link_in

    @property
    def params(self) -> int:
        """Weights and biases of one column's part."""
        return self.inputs * self.out * self.kernel * self.kernel + self.out

    def pools(self) -> tuple[str, ...]:
        return tuple(m for m in self.modules if m.startswith("pool"))


@dataclass(frozen=True)
class NetPlan:
    columns: int              # 2: the paper's net; 1: the one-GPU comparison net
    layers: tuple[Layer, ...]
    sides: dict               # side of every map by module name: conv1, pool1, ..., pool5

    def __getitem__(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def column_layers(self) -> tuple[Layer, ...]:
        """conv1..fc7: what every column holds (fc8 is column A's alone)."""
        return self.layers[:-1]

    @property
    def links(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers if layer.link)

    def segments(self) -> list[tuple[str | None, tuple[Layer, ...]]]:
        """The column layers cut at the links: [(link or None, layers it feeds until the next
        link)], e.g. [(None, conv1 conv2), ("conv3", conv3 conv4 conv5), ("fc6", fc6), ("fc7", fc7)]."""
        out: list[tuple[str | None, list[Layer]]] = []
        for layer in self.column_layers:
            if layer.link or not out:
                out.append((layer.link, []))
            out[-1][1].append(layer)
        return [(link, tuple(layers)) for link, layers in out]

    def parameters(self) -> int:
        """Parameters of the whole net: every column's part of each layer, fc8 once."""
        return sum(layer.params * (1 if layer.name == "fc8" else self.columns) for layer in self.layers)

    def activations(self) -> int:
        """Values one image leaves behind in the forward pass (each conv's map and its pooled
        maps, the fc outputs), for the memory guard: an estimate, low rather than high."""
        total = 0
        for layer in self.layers:
            each = self.columns if layer.name != "fc8" else 1
            total += each * layer.out * (layer.side_out ** 2 + sum(self.sides[p] ** 2 for p in layer.pools()))
        return total


def conv1_geometry(side: int, kernel: int, stride: int) -> tuple[int, int]:
    """(output side, right/bottom zero padding) of conv1.

    The 2012 code computes conv1's output as 1 + ceil((224 - 11) / 4) = 55, which only works
    if the image is zero-padded by 3 pixels on the right and bottom; we do the same, so a
    224x224 input gives 55x55 as in the paper's figure."""
    out = 1 + math.ceil((side - kernel) / stride)
    return out, (out - 1) * stride + kernel - side


def pool_side(n: int, kernel: int, stride: int, round_up: bool) -> int:
    """Output side of a max pool with no padding, as nn.MaxPool2d(kernel, stride, ceil_mode=round_up)
    computes it. Rounding up is the 2012 code's rule, 1 + ceil((n - kernel) / stride)
    (cuda-convnet layer.py:1163-1164); PyTorch also drops a last window that would start
    outside the map, which only happens when the stride exceeds the kernel."""
    if not round_up:
        return (n - kernel) // stride + 1
    out = -(-(n - kernel) // stride) + 1
    return out - 1 if (out - 1) * stride >= n else out


def plan(m) -> NetPlan:
    """The plan of the net a ModelConfig describes; ConfigError where a map would be empty."""
    columns = 2 if m.arch == "twocol" else 1
    widths = dict(zip(("conv1", "conv2", "conv3", "conv4", "conv5"), m.conv_widths))
    sides: dict[str, int] = {}

    def check(name: str, side: int) -> int:
        if side < 1:
            raise ConfigError(f"model.input_size={m.input_size} is too small: {name} would be empty")
        sides[name] = side
        return side

    layers: list[Layer] = []
    side, channels = m.input_size, 3
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        after = _AFTER[name]
        if name in m.layers_off:
            # Its activation goes with it; its pool stays, at the end of the layer before.
            pools = tuple(x for x in after if x.startswith("pool"))
            for p in pools:
                side = check(p, pool_side(side, m.pool.kernel, m.pool.stride, m.pool.round_up))
            layers[-1] = replace(layers[-1], modules=layers[-1].modules + pools)
            continue
        if name == "conv1":
            kernel, stride = m.conv1.kernel, m.conv1.stride
            out_side, extra = conv1_geometry(side, kernel, stride)
            padding = 0
        else:
            kernel, stride, padding, extra = _KERNEL[name], 1, getattr(m.padding, name), 0
            out_side = side + 2 * padding - kernel + 1
        side = check(name, out_side)
        for p in (x for x in after if x.startswith("pool")):
            side = check(p, pool_side(side, m.pool.kernel, m.pool.stride, m.pool.round_up))
        linked = columns == 2 and name == m.conv_link
        layers.append(Layer(name, channels, channels if linked else 0, widths[name], (name,) + after,
                            kernel, stride, padding, extra, out_side))
        channels = widths[name]
    features = channels * side * side
    for name, out in (("fc6", m.fc_widths[0]), ("fc7", m.fc_widths[1]), ("fc8", m.num_classes)):
        layers.append(Layer(name, features, features if columns == 2 else 0, out, (name,) + _AFTER[name]))
        features = out
    return NetPlan(columns, tuple(layers), sides)


def feature_sides(m) -> dict[str, int]:
    """Spatial side of every map of the net (conv1, pool1, ..., pool5), square maps."""
    return dict(plan(m).sides)
