"""The two-column AlexNet, read off the paper's Figure 2 (sizes: docs/design.md).

Each Column holds one half of every layer and lives on one device. Data crosses between the
columns only through the four named links: conv3 (both pool2 outputs), fc6 (both pool5
outputs), fc7 (both fc6 outputs) and fc8 (both fc7 outputs, gathered on column A's device,
where fc8 and the loss live).

Both nets take ColumnInputs (inputs.py): the batch on each column's device, put there by the
data pipeline; a plain tensor only where every column runs on its device.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import ops, sim
from .config import Config, ModelConfig
from .devices import Placement
from .inputs import ColumnInputs, column_inputs
from .layers import Layer, NetPlan, plan
from .links import ColumnRuntime, Link, streams_follow_caller
from .netsize import check_size


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


class Conv1(nn.Conv2d):
    """conv1, with the 2012 code's zero padding on the right and bottom only
    (layers.conv1_geometry: 55x55 from a 224 input)."""

    def __init__(self, out_channels: int, kernel: int, stride: int, pad_right_bottom: int):
        super().__init__(3, out_channels, kernel, stride=stride)
        self.pad_right_bottom = pad_right_bottom

    def forward(self, x):
        return super().forward(F.pad(x, (0, self.pad_right_bottom, 0, self.pad_right_bottom)))


def layer_modules(layer: Layer, m: ModelConfig, both_columns: bool = False) -> dict[str, nn.Module]:
    """The modules of one layer of the plan (conv1, norm1, pool1; ...; fc6, act6, drop6): one
    column's part, or with both_columns both parts as one layer (reference.py's grouped net:
    a layer no link feeds is grouped, each column's half seeing its own half of the input)."""
    k = 2 if both_columns else 1
    mods: dict[str, nn.Module] = {}
    for name in layer.modules:
        if name == "conv1":  # both columns read the same image
            mods[name] = Conv1(k * layer.out, layer.kernel, layer.stride, layer.pad_right_bottom)
        elif name.startswith("conv"):
            mods[name] = nn.Conv2d(k * layer.own_in if both_columns else layer.inputs, k * layer.out, layer.kernel,
                                   padding=layer.padding, groups=2 if both_columns and not layer.link else 1)
        elif name.startswith("fc"):
            mods[name] = nn.Linear(layer.inputs, k * layer.out)
        elif name.startswith("norm"):
            mods[name] = ActNorm(m, int(name[-1]))
        elif name.startswith("act"):
            mods[name] = nn.ReLU() if m.activation == "relu" else nn.Tanh()
        elif name.startswith("pool"):
            mods[name] = nn.MaxPool2d(m.pool.kernel, m.pool.stride, ceil_mode=m.pool.round_up)
        elif name.startswith("drop"):
            mods[name] = Dropout(m.dropout, m.dropout_convention)
    return mods


class Column(nn.Module):
    """One column: conv1..conv5 and fc6, fc7 as the plan (layers.py) gives them, each layer a
    run of modules (conv1, norm1, pool1; ...). A layer model.layers_off removed, and its
    activation, are None; its pool stays. Input widths include what a link brings."""

    def __init__(self, net_plan: NetPlan, m: ModelConfig):
        super().__init__()
        for name in ("conv2", "norm2", "conv3", "act3", "conv4", "act4"):
            setattr(self, name, None)  # unless the plan has them
        self.blocks = {}
        for layer in net_plan.column_layers:
            for name, module in layer_modules(layer, m).items():
                setattr(self, name, module)
            self.blocks[layer.name] = layer.modules
        # The layers between two links run as one stage (what torch.compile may fuse into one graph).
        self.stages = [functools.partial(self.run, tuple(l.name for l in layers)) for _, layers in net_plan.segments()]

    def run(self, layers: tuple[str, ...], x):
        """The modules of `layers`, in order, on x; conv5's block ends flattened, as fc6 reads it."""
        for layer in layers:
            for name in self.blocks[layer]:
                x = getattr(self, name)(x)
            if layer == "conv5":
                x = torch.flatten(x, 1)
        return x


class TwoColumnNet(nn.Module):
    """The paper's net: column A on placement.a, column B on placement.b, a link wherever the
    plan has a layer read both columns (conv3, fc6, fc7, fc8 in the paper's net)."""

    def __init__(self, m: ModelConfig, placement: Placement):
        super().__init__()
        self.placement = placement
        self.plan = plan(m)
        self.col_a = Column(self.plan, m)
        self.col_b = Column(self.plan, m)
        self.fc8 = nn.Linear(self.plan["fc8"].inputs, m.num_classes)
        self.links = {name: Link(name) for name in self.plan.links}
        # The link (or None) before each of the columns' stages, in order.
        self.stage_links = tuple(link for link, _ in self.plan.segments())
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
        # there. Between links each column runs its layers on its own; at a link they trade.
        xa, xb = x.a, x.b
        for link, stage_a, stage_b in zip(self.stage_links, self.col_a.stages, self.col_b.stages):
            if link is not None:
                xa, xb = self.exchange(link, xa, xb)
            with a:
                xa = stage_a(xa)
            with b:
                xb = stage_b(xb)
        with a:
            return torch.cat([xa, self.links["fc8"].send(xb, b, a)], 1)

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
        self.plan = plan(m)
        self.col_a = Column(self.plan, m)
        self.fc8 = nn.Linear(self.plan["fc8"].inputs, m.num_classes)
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
            return self.col_a.stages[0](x)

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
