"""The paper's ablations, defined once: each entry holds what it changes (a function from a
config to the overrides that ablate it), the paper's claim and figure, and how the report names
and reads it. `twocol describe|train|eval --ablation NAME`, bench/paper.py and bench/report.py
all read them from here, so any row of the bench can be rerun by hand, and adding an ablation is
one entry (and its test).

They follow the released 2012 code's ablation nets where it has them: `lrn_off` is net 148
(every response normalisation removed, the layer-2 spatial one too: layers-148.cfg), and
`pool_2x2` is net 147 (2x2/2 pools that round up, with conv2 and conv5 padded one less, so every
later map and the parameter count stay those of the overlapping-pool net: layers-147.cfg).
The depth claim's `conv2_off`, `conv3_off` and `conv4_off` remove one middle layer from both
columns (model.layers_off); the next layer is sized to what it then receives, and where the
removed layer is where the columns meet (conv3), the link stays and feeds the next layer, so that
only depth changes. `conv3_and_link_off` removes conv3 with its link: depth and the columns'
connectivity together.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .config import Config, config_from_dict
from .errors import ConfigError
from .layers import feature_sides, next_conv


@dataclass(frozen=True)
class Speed:
    """An ablation whose claim is about speed: epochs to a training error, ablated over baseline."""
    paper_ratio: float        # ablated / baseline epochs, as the paper gives it
    paper_threshold: float | None  # the training top-1 error (%) the paper counts to, if it names one
    paper_where: str          # what the paper measured, for the report
    labels: tuple[str, str]   # the baseline net and the ablated net, in words


@dataclass(frozen=True)
class Ablation:
    """Everything about one of the paper's ablations: the CLI, `twocol describe`, bench/paper.py
    and bench/report.py read it from here."""
    name: str
    what: str                                  # what it changes, in words
    overrides: Callable[[Config], list[str]]   # the config overrides that make it
    claim: str                                 # what the paper says of it
    paper_effect: dict[str, float]             # ablated minus baseline error (points), where the paper gives it
    label: str                                 # its row in the report
    directions: tuple[str, str]                # what a top-1 change above / below 0 means
    speed: Speed | None = None                 # also compare epochs to a training error
    # Overrides the baseline needs first, for a config that lacks what is ablated (the bench
    # then runs that baseline and says so); none for most.
    baseline: Callable[[Config], list[str]] = lambda cfg: []
    # Refuses (ConfigError) a config where the ablated net would not be the paper's comparison.
    check: Callable[[Config, Config], None] | None = None


def _lrn_off(cfg: Config) -> list[str]:
    # Net 148 drops the cmrnorm layers and the spatial rnorm layers of 145 (layers-148.cfg:38,47,86,94).
    out = ["model.lrn.enabled=false"]
    if cfg.model.spatial_norm.enabled:
        out.append("model.spatial_norm.enabled=false")
    return out


def _pool_2x2(cfg: Config) -> list[str]:
    # Net 147 (layers-147.cfg): sizeX=2 with stride 2 for pool1-3 (:51,60,123,131,223,232), conv2
    # padding 1 (:69,84), conv5 padding 0 (:195,209); cuda-convnet's pools round up (layer.py:1163).
    return ["model.pool.kernel=2", "model.pool.stride=2", "model.pool.round_up=true",
            "model.padding.conv2=1", "model.padding.conv5=0"]


def _check_same_sizes(base: Config, ablated: Config) -> None:
    """Net 147's paddings keep conv3's input and fc6's input (and so every parameter) as in the
    overlapping-pool net; refuse a config where they would not (another input size, say)."""
    a, b = feature_sides(base.model), feature_sides(ablated.model)
    for layer in ("pool2", "pool5"):
        if a[layer] != b[layer]:
            raise ConfigError(f"ablation pool_2x2 would change {layer} from {a[layer]}x{a[layer]} to "
                              f"{b[layer]}x{b[layer]} for model.input_size={base.model.input_size}; "
                              "the comparison needs nets of the same size")


def _layer_off(layer: str, keep_link: bool = True) -> Callable[[Config], list[str]]:
    """Remove `layer` from every column. Where it is the layer that reads both columns
    (model.conv_link), the link stays and feeds the next conv layer, which then reads what the
    removed one read (keep_link), or goes with it (the columns then meet only at the fc links)."""
    def overrides(cfg: Config) -> list[str]:
        m = cfg.model
        if layer in m.layers_off:
            raise ConfigError(f"ablation {layer}_off: the config has no {layer} to remove (model.layers_off)")
        out = [f"model.layers_off=[{', '.join([*m.layers_off, layer])}]"]
        if m.conv_link == layer:
            out.append(f"model.conv_link={next_conv(layer, m.layers_off) if keep_link else 'none'}")
        elif not keep_link:
            raise ConfigError(f"ablation {layer}_and_link_off: {layer} is not where the columns meet "
                              f"(model.conv_link={m.conv_link})")
        return out
    return overrides


def _dropout_baseline(cfg: Config) -> list[str]:
    # A config without dropout (the tiny ones) has nothing to take away: the comparison then
    # runs against the same net with the paper's dropout.
    return [] if cfg.model.dropout > 0 else ["model.dropout=0.5", "model.dropout_convention=paper"]


DEPTH_CLAIM = "removing any middle convolutional layer loses about 2% top-1 (section 7)"

ABLATIONS = {a.name: a for a in (
    Ablation("lrn_off", "no response normalisation (the 2012 code's net 148; the layer-2 spatial norm goes too)",
             _lrn_off, "LRN lowers error by 1.4% top-1, 1.2% top-5 (ImageNet)", {"top1": 1.4, "top5": 1.2},
             "LRN off", ("error rises without LRN", "error falls without LRN")),
    Ablation("pool_2x2", "non-overlapping 2x2/2 pooling (the 2012 code's net 147: conv2 padded 1, conv5 0, "
                         "pools rounding up; every later map and the parameters unchanged)", _pool_2x2,
             "overlapping pooling (3/2 vs 2/2) lowers error by 0.4% top-1, 0.3% top-5", {"top1": 0.4, "top5": 0.3},
             "pooling 2x2 (non-overlapping)", ("2x2 pooling errs more", "2x2 pooling errs less"),
             check=_check_same_sizes),
    Ablation("tanh", "tanh instead of ReLU everywhere", lambda cfg: ["model.activation=tanh"],
             "ReLU reaches 25% training error 6x sooner than tanh (CIFAR-10, 4 layers)", {},
             "tanh instead of ReLU", ("tanh errs more", "tanh errs less"),
             speed=Speed(6.0, 25.0, "to 25% on CIFAR-10", ("ReLU", "tanh"))),
    Ablation("lighting_off", "no PCA lighting noise", lambda cfg: ["data.lighting_std=0"],
             "PCA lighting lowers top-1 error by over 1%", {"top1": 1.0},
             "PCA lighting off", ("error rises without lighting", "error falls without lighting")),
    Ablation("conv2_off", "conv2 removed from both columns, with its ReLU and LRN: conv3 reads pool2 of conv1's "
                          "pooled maps (pool2 stays)", _layer_off("conv2"), DEPTH_CLAIM, {"top1": 2.0},
             "conv2 removed", ("error rises without conv2", "error falls without conv2")),
    Ablation("conv3_off", "conv3 removed from both columns, its link kept: conv4 of each column reads what conv3 "
                          "read, both columns' pool2 (depth alone)", _layer_off("conv3"), DEPTH_CLAIM, {"top1": 2.0},
             "conv3 removed (link kept)", ("error rises without conv3", "error falls without conv3")),
    Ablation("conv3_and_link_off", "conv3 removed from both columns with its link: conv4 reads its own column's "
                                   "pool2, so the columns meet only at the fc links (depth and connectivity together)",
             _layer_off("conv3", keep_link=False), DEPTH_CLAIM, {"top1": 2.0},
             "conv3 and its link removed", ("error rises without conv3 and its link",
                                            "error falls without conv3 and its link")),
    Ablation("conv4_off", "conv4 removed from both columns: conv5 reads conv3's output (conv3's width)",
             _layer_off("conv4"), DEPTH_CLAIM, {"top1": 2.0},
             "conv4 removed", ("error rises without conv4", "error falls without conv4")),
    Ablation("dropout_off", "no dropout (model.dropout=0)", lambda cfg: ["model.dropout=0"],
             "without dropout the net overfits substantially; dropout roughly doubles the iterations "
             "needed to converge (section 4.2)", {},
             "dropout off", ("error rises without dropout", "error falls without dropout"),
             baseline=_dropout_baseline),
)}


def ablation_overrides(cfg: Config, names: list[str] | tuple[str, ...]) -> list[str]:
    """The overrides that apply `names`, in order, to `cfg` (each sees the previous ones). One
    that would leave the config as it is (lrn_off of a net without LRN) is a ConfigError."""
    out: list[str] = []
    for name in names:
        if name not in ABLATIONS:
            raise ConfigError(f"unknown ablation '{name}'; the ablations are {', '.join(ABLATIONS)}")
        ablation = ABLATIONS[name]
        extra = ablation.overrides(cfg)
        ablated = config_from_dict(cfg.to_dict(), f"ablation {name}", extra)
        # Ablating what the config lacks compares nothing (the bench ablates a baseline that has
        # it instead: Ablation.baseline).
        if ablated.to_dict() == cfg.to_dict():
            raise ConfigError(f"ablation {name} changes nothing: the config already has {', '.join(extra)}")
        if ablation.check is not None:
            ablation.check(cfg, ablated)
        cfg, out = ablated, out + extra
    return out


def apply_ablations(cfg: Config, names: list[str] | tuple[str, ...]) -> Config:
    return config_from_dict(cfg.to_dict(), "ablations", ablation_overrides(cfg, names)) if names else cfg
