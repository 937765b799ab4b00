"""Every config key: the dataclasses below are the schema a config's YAML file and its
`key.sub=value` overrides are read into (through typed_yaml.py: unknown keys and values of
the wrong type are a ConfigError naming the key and the file, and what is parsed is bounded),
and `validate` holds the checks that go beyond types.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from .errors import ConfigError
from .layers import LAYERS, REMOVABLE, next_conv
from .typed_yaml import from_dict, key_text, read_yaml, show

# Side of a stored image (data.image_size, prepare --size, synth --size): the paper stores
# 256; a larger side than this only multiplies every buffer (a mean image of S x S x 3 int64
# sums per worker) for no use.
MAX_IMAGE_SIDE = 2048
# Images per class of a synthetic set (data.synth_per_class, synth --per-class and
# --val-per-class): 100,000 of 1,000 classes would already be 10^8 files.
MAX_SYNTH_PER_CLASS = 100_000
# train.seed seeds numpy's legacy generator, which takes 0..2**32 - 1, plus each process's
# rank under torchrun: the seed itself stays below 2**31.
MAX_SEED = 2 ** 31 - 1


@dataclass
class Conv1Config:
    kernel: int = 11
    stride: int = 4


@dataclass
class LRNConfig:
    enabled: bool = True
    size: int = 5
    k: float = 2.0
    alpha: float = 1e-4
    beta: float = 0.75
    # "sum": alpha multiplies the plain sum of squares (the paper's formula).
    # "mean": alpha is divided by size first (the 2012 code, Caffe, torch.nn.LocalResponseNorm).
    alpha_convention: Literal["sum", "mean"] = "sum"
    # The paper normalises after the ReLU everywhere; the 2012 code's layer 1 normalises before it.
    layer1_order: Literal["relu_lrn", "lrn_relu"] = "relu_lrn"


@dataclass
class SpatialNormConfig:
    """The 2012 code's layer-2 "rnorm": x / (1 + scale/size^2 * sum over a size x size window
    of x^2)^pow, applied per channel between LRN and pool2. The paper never mentions it."""
    enabled: bool = False
    size: int = 5
    scale: float = 1e-3
    pow: float = 0.75


@dataclass
class PoolConfig:
    kernel: int = 3
    stride: int = 2
    # false: out = floor((n - kernel) / stride) + 1 (PyTorch's default). true: the 2012 code's
    # rounding up, out = ceil((n - kernel) / stride) + 1, the last window clipped to the map
    # (cuda-convnet layer.py:1163-1164); the two agree whenever every window fits.
    round_up: bool = False


@dataclass
class PaddingConfig:
    """Zero padding of conv2..conv5 on every side (conv1's is worked out by conv1_geometry).
    The paper's net keeps the size through them: 2 for 5x5, 1 for 3x3. The 2012 code's net 147
    (non-overlapping pooling) has conv2 1 and conv5 0 (layers-147.cfg:69,84 and :195,209)."""
    conv2: int = 2
    conv3: int = 1
    conv4: int = 1
    conv5: int = 1


@dataclass
class ModelConfig:
    arch: Literal["twocol", "onecol"] = "twocol"
    input_size: int = 224
    num_classes: int = 1000
    conv1: Conv1Config = field(default_factory=Conv1Config)
    # Widths of conv1..conv5 and fc6, fc7 for ONE column (twocol) or for the single column (onecol).
    conv_widths: list[int] = field(default_factory=lambda: [48, 128, 192, 192, 128])
    fc_widths: list[int] = field(default_factory=lambda: [2048, 2048])
    activation: Literal["relu", "tanh"] = "relu"
    lrn: LRNConfig = field(default_factory=LRNConfig)
    spatial_norm: SpatialNormConfig = field(default_factory=SpatialNormConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    padding: PaddingConfig = field(default_factory=PaddingConfig)
    # Middle conv layers removed from every column (the paper's section 7 depth claim): conv2,
    # conv3 and/or conv4; the next layer reads what the removed one read, and a removed layer's
    # pool stays (layers.py).
    layers_off: list[str] = field(default_factory=list)
    # The conv layer that reads both columns' maps (the paper's conv3; the 2012 code also tried
    # conv4, and none, where the columns meet only at the fc layers); the one-column net has none.
    conv_link: Literal["conv3", "conv4", "conv5", "none"] = "conv3"
    dropout: float = 0.5
    # "paper": training zeroes each fc6/fc7 output with probability `dropout`, unscaled, and
    # evaluation multiplies them by 1 - dropout (section 4.2, the 2012 code). "inverted": the
    # kept outputs are divided by 1 - dropout in training, nothing at test (torch.nn.Dropout).
    # A checkpoint written before this key existed was trained "inverted" and reads as such
    # (checkpoint.checkpoint_config).
    dropout_convention: Literal["paper", "inverted"] = "paper"


@dataclass
class InitConfig:
    # "paper": N(0, weight_std) weights, biases 1 on bias_one layers and 0 elsewhere.
    # "kaiming": Kaiming-normal weights and zero biases (the small configs: see docs/design.md).
    scheme: Literal["paper", "kaiming"] = "paper"
    weight_std: float = 0.01
    # Per-layer std overrides, e.g. {conv3: 0.03} for the 2012 code; with "kaiming", the named
    # layers get N(0, std) weights instead of Kaiming's (and zero biases).
    layer_std: dict[str, float] = field(default_factory=dict)
    bias_one: list[str] = field(default_factory=lambda: ["conv2", "conv4", "conv5", "fc6", "fc7"])


@dataclass
class OptimConfig:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0005
    # Biases learn at lr * bias_lr_mult (the 2012 code: 0.02 = 2 x 0.01).
    bias_lr_mult: float = 1.0
    # The update as a few multi-tensor ops per device (torch._foreach_*) instead of four ops per
    # tensor: the same arithmetic, fewer kernel launches on a GPU.
    foreach: bool = False
    # true: the schedule divides the biases' rate with the weights'; false: it stays at
    # lr * bias_lr_mult for the whole run (the 2012 code's epsB).
    bias_lr_scheduled: bool = True
    # false: no weight decay on biases (the 2012 code's biases have wc = 0).
    bias_weight_decay: bool = True


@dataclass
class LayerStep:
    """From the end of epoch `epoch` on, one layer's weights and/or biases learn at an absolute
    rate, whatever the schedule does to the others; 0 freezes them (no update at all)."""
    layer: str = ""
    epoch: int = 0
    weight_lr: Optional[float] = None
    bias_lr: Optional[float] = None


@dataclass
class ScheduleConfig:
    # "plateau": divide by 1/factor when the validation error has not improved for `patience`
    # epochs, at most `max_drops` times. "fixed": divide at the end of each epoch of `milestones`.
    kind: Literal["plateau", "fixed"] = "plateau"
    factor: float = 0.1
    patience: int = 5
    max_drops: int = 3
    milestones: list[int] = field(default_factory=lambda: [25, 51, 79])
    # What "has not improved" means for "plateau". With all three at 0 it is the paper's rule on
    # the raw error: any epoch below the best so far is an improvement.
    # smoothing: the rule watches an exponential moving average of the error,
    #   v <- smoothing * v + (1 - smoothing) * error (0: the raw error);
    # min_delta: an epoch improves only if v < best * (1 - min_delta) (relative);
    # min_epochs: no cut before this many epochs.
    smoothing: float = 0.0
    min_delta: float = 0.0
    min_epochs: int = 0
    # "plateau" only: end the run when the validation error stops improving after the last of
    # max_drops cuts (the point where another cut would come), so that train.epochs is a cap
    # rarely reached rather than the length of every run; false: train.epochs epochs.
    end_on_plateau: bool = False
    layer_steps: list[LayerStep] = field(default_factory=list)


@dataclass
class DataConfig:
    # Side of the stored square images (prepare's output size); crops are model.input_size.
    image_size: int = 256
    batch_size: int = 128
    # Std of the PCA lighting noise alpha; 0 turns it off.
    lighting_std: float = 0.1
    # Lighting in the first N epochs only (then off: the 2012 code's colour noise stopped after
    # epoch 67); None: every epoch. Counted like schedule.milestones: after N finished epochs.
    lighting_until_epoch: Optional[int] = None
    # While lighting is on, divide each training crop by 1 + lighting_std as well (the 2012
    # code did, to keep the training inputs' scale near the test inputs'); test crops never.
    lighting_rescale: bool = False
    # Mean-subtracted pixels are divided by this (1.0 = raw 0..255 scale as in the paper).
    input_scale: float = 1.0
    # The mean image subtracted from a crop: "crop" cuts it (and mirrors it) with the image,
    # the paper's "subtracting the mean activity"; "centre": its centre crop, unmirrored, for
    # every crop and view (the 2012 code).
    mean_window: Literal["crop", "centre"] = "crop"
    # One random crop position per chunk of this many consecutive images (the 2012 code used
    # 32); 1 = per image. flip_chunk does the same for the mirror flip.
    crop_chunk: int = 1
    flip_chunk: int = 1
    loader: Literal["auto", "dali", "torch"] = "auto"
    # Where DALI decodes: "mixed" on column A's GPU (nvImageCodec; JPEGs its GPU decoders
    # reject go to its CPU decoder), "cpu" on the host, "auto": mixed on a GPU placement where
    # it runs, else cpu. The torch loader always decodes on the host.
    decoder: Literal["auto", "mixed", "cpu"] = "auto"
    # Share of JPEG decoding DALI's mixed decoder gives the GPU's hardware decoder, where
    # there is one (A100, H100, ...); DALI's own default.
    hw_decoder_load: float = 0.65
    # Batches each loader prepares ahead (DALI's prefetch queue; batches per torch worker).
    prefetch: int = 2
    workers: int = 2
    # Start-up check of the stored files against the dataset's checksums.txt: "crc" (the
    # CRC-32 of every file; a file unchanged since it last matched is not read again), "size"
    # (a stat per file), "off".
    verify_files: Literal["size", "crc", "off"] = "crc"
    # A training epoch in which more than this share of the images is bad (unreadable, not
    # a decodable image, or of the wrong size) stops the run (exit 2, with a checkpoint).
    max_bad_fraction: float = 0.01
    # Built-in synthetic dataset used when no --data is given.
    synth_classes: int = 10
    synth_per_class: int = 500


@dataclass
class TrainConfig:
    epochs: int = 90
    seed: int = 0
    log_every: int = 20
    # Run directories are made under this folder unless --run-dir names one.
    out_dir: str = "runs"
    # "bf16": forward and backward under torch.autocast(bfloat16); weights stay float32.
    amp: Literal["off", "bf16"] = "off"


@dataclass
class Config:
    name: str = "unnamed"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    init: InitConfig = field(default_factory=InitConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Load a YAML config (or the defaults when path is None) and apply overrides in order.

    A file may start from another: `base: other.yaml` (a path relative to the file) reads that
    one first and merges this one's keys over it (mappings key by key, anything else replaced)."""
    if path is None:
        return config_from_dict({}, "defaults", overrides)
    return config_from_dict(read_yaml(Path(path)), str(path), overrides)


def config_from_dict(data: dict, source: str = "checkpoint", overrides: list[str] = ()) -> Config:
    return from_dict(Config, data, source, validate, overrides)


def validate(cfg: Config, source: str) -> None:
    """Checks that go beyond types: values the model or optimiser could not use."""
    m = cfg.model

    def need(ok: bool, key: str, what: str):
        if not ok:
            raise ConfigError(f"{source}: {key} {what}")

    need(0 < len(cfg.name) <= 100 and cfg.name.isprintable() and "/" not in cfg.name
         and cfg.name not in (".", ".."), "name", "must be 1 to 100 printable characters without '/' "
         "(it names the run directory)")
    need(len(m.conv_widths) == 5, "model.conv_widths", "must list 5 widths (conv1..conv5)")
    need(len(m.fc_widths) == 2, "model.fc_widths", "must list 2 widths (fc6, fc7)")
    need(all(w > 0 for w in m.conv_widths + m.fc_widths), "model widths", "must be positive")
    need(m.lrn.size % 2 == 1 and m.lrn.size > 0, "model.lrn.size", "must be a positive odd number")
    need(m.spatial_norm.size % 2 == 1, "model.spatial_norm.size", "must be odd")
    need(0.0 <= m.dropout < 1.0, "model.dropout", "must be in [0, 1)")
    need(set(m.layers_off) <= set(REMOVABLE) and len(set(m.layers_off)) == len(m.layers_off),
         "model.layers_off", f"may name {', '.join(REMOVABLE)}, each once; got {show(m.layers_off)}")
    need(m.arch == "onecol" or m.conv_link not in m.layers_off, "model.conv_link",
         f"names {m.conv_link}, which model.layers_off removes: name the layer that reads both columns "
         f"instead (the next one: {next_conv(m.conv_link, m.layers_off)}) or none")
    need(m.num_classes > 1, "model.num_classes", "must be at least 2")
    need(m.input_size > 0, "model.input_size", "must be positive")
    need(m.conv1.kernel <= m.input_size, "model.conv1.kernel", "must not exceed model.input_size")
    need(m.conv1.stride > 0 and m.pool.stride > 0 and m.pool.kernel > 0, "model strides", "must be positive")
    pads = dataclasses.asdict(m.padding)
    need(all(v >= 0 for v in pads.values()), "model.padding", f"must be >= 0, got {pads}")
    need(cfg.data.image_size >= m.input_size, "data.image_size", "must be at least model.input_size")
    need(cfg.data.image_size <= MAX_IMAGE_SIDE, "data.image_size", f"must be at most {MAX_IMAGE_SIDE}")
    need(cfg.data.workers >= 0, "data.workers", "must be >= 0 (0: load in the training process)")
    need(1 <= cfg.data.synth_per_class <= MAX_SYNTH_PER_CLASS, "data.synth_per_class",
         f"must be in 1..{MAX_SYNTH_PER_CLASS}")
    need(cfg.data.batch_size > 0, "data.batch_size", "must be positive")
    need(cfg.data.crop_chunk > 0, "data.crop_chunk", "must be positive")
    need(cfg.data.flip_chunk > 0, "data.flip_chunk", "must be positive")
    need(cfg.data.lighting_until_epoch is None or cfg.data.lighting_until_epoch >= 0,
         "data.lighting_until_epoch", "must be >= 0 (or null: every epoch)")
    need(0.0 <= cfg.data.hw_decoder_load <= 1.0, "data.hw_decoder_load", "must be in [0, 1]")
    # Each slot holds a whole batch (DALI's on the GPU); both loaders' default is 2. DALI asked
    # for 10^8 slots had not started after 10 minutes here (CPU decoder, tiny set).
    need(0 < cfg.data.prefetch <= 64, "data.prefetch", "must be in 1..64 (batches prepared ahead)")
    need(0.0 <= cfg.data.max_bad_fraction < 1.0, "data.max_bad_fraction", "must be in [0, 1)")
    need(cfg.data.lighting_std >= 0, "data.lighting_std", "must be >= 0")
    need(cfg.data.input_scale > 0, "data.input_scale", "must be positive")
    need(cfg.optim.lr > 0, "optim.lr", "must be positive")
    need(cfg.train.epochs > 0, "train.epochs", "must be positive")
    need(0 <= cfg.train.seed <= MAX_SEED, "train.seed", f"must be in 0..{MAX_SEED}")
    need(cfg.train.log_every > 0, "train.log_every", "must be positive")
    sch = cfg.schedule
    need(0 < sch.factor < 1, "schedule.factor", "must be in (0, 1)")
    need(0 <= sch.smoothing < 1, "schedule.smoothing", "must be in [0, 1)")
    need(0 <= sch.min_delta < 1, "schedule.min_delta", "must be in [0, 1)")
    need(sch.min_epochs >= 0 and sch.patience >= 1, "schedule.min_epochs and patience", "must be >= 0 and >= 1")
    need(not sch.end_on_plateau or sch.kind == "plateau", "schedule.end_on_plateau",
         "needs schedule.kind=plateau (a fixed schedule ends at train.epochs)")
    layers = set(LAYERS)
    for name in list(cfg.init.layer_std) + cfg.init.bias_one:
        need(name in layers, f"init ({key_text(name)})", f"names no layer; layers are {sorted(layers)}")
    for i, step in enumerate(sch.layer_steps):
        key = f"schedule.layer_steps[{i}]"
        need(step.layer in layers, key, f"names no layer ({key_text(step.layer)}); layers are {sorted(layers)}")
        need(step.epoch >= 0, key, "epoch must be >= 0")
        need(step.weight_lr is not None or step.bias_lr is not None, key, "sets neither weight_lr nor bias_lr")
        need(all(r is None or r >= 0 for r in (step.weight_lr, step.bias_lr)), key, "rates must be >= 0")
