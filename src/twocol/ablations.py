"""The paper's ablations, defined once: each is a function from a config to the overrides that
ablate it, used by `twocol describe|train|eval --ablation NAME` and by bench/paper.py, so any
row of the bench can be rerun by hand.

They follow the released 2012 code's ablation nets where it has them: `lrn_off` is net 148
(every response normalisation removed, the layer-2 spatial one too: layers-148.cfg), and
`pool_2x2` is net 147 (2x2/2 pools that round up, with conv2 and conv5 padded one less, so every
later map and the parameter count stay those of the overlapping-pool net: layers-147.cfg).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .config import Config, config_from_dict
from .errors import ConfigError
from .model import feature_sides


@dataclass(frozen=True)
class Ablation:
    name: str
    what: str
    overrides: Callable[[Config], list[str]]


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


def _tanh(cfg: Config) -> list[str]:
    return ["model.activation=tanh"]


def _lighting_off(cfg: Config) -> list[str]:
    return ["data.lighting_std=0"]


ABLATIONS = {a.name: a for a in (
    Ablation("lrn_off", "no response normalisation (the 2012 code's net 148; the layer-2 spatial norm goes too)",
             _lrn_off),
    Ablation("pool_2x2", "non-overlapping 2x2/2 pooling (the 2012 code's net 147: conv2 padded 1, conv5 0, "
                         "pools rounding up; every later map and the parameters unchanged)", _pool_2x2),
    Ablation("tanh", "tanh instead of ReLU everywhere", _tanh),
    Ablation("lighting_off", "no PCA lighting noise", _lighting_off),
)}


def ablation_overrides(cfg: Config, names: list[str] | tuple[str, ...]) -> list[str]:
    """The overrides that apply `names`, in order, to `cfg` (each sees the previous ones)."""
    out: list[str] = []
    for name in names:
        if name not in ABLATIONS:
            raise ConfigError(f"unknown ablation '{name}'; the ablations are {', '.join(ABLATIONS)}")
        extra = ABLATIONS[name].overrides(cfg)
        ablated = config_from_dict(cfg.to_dict(), f"ablation {name}", extra)
        if name == "pool_2x2":
            _check_same_sizes(cfg, ablated)
        cfg, out = ablated, out + extra
    return out


def apply_ablations(cfg: Config, names: list[str] | tuple[str, ...]) -> Config:
    return config_from_dict(cfg.to_dict(), "ablations", ablation_overrides(cfg, names)) if names else cfg


def _check_same_sizes(base: Config, ablated: Config) -> None:
    """Net 147's paddings keep conv3's input and fc6's input (and so every parameter) as in the
    overlapping-pool net; refuse a config where they would not (another input size, say)."""
    a, b = feature_sides(base.model), feature_sides(ablated.model)
    for layer in ("pool2", "pool5"):
        if a[layer] != b[layer]:
            raise ConfigError(f"ablation pool_2x2 would change {layer} from {a[layer]}x{a[layer]} to "
                              f"{b[layer]}x{b[layer]} for model.input_size={base.model.input_size}; "
                              "the comparison needs nets of the same size")
