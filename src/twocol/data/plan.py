"""What an epoch delivers, decided once in numpy and shared by the DALI and the torch loaders:
which images in which order, and every random augmentation parameter of every image. Both
backends apply these parameters; neither draws random numbers of its own. So an epoch is a pure
function of (seed, epoch, shard), a run resumed at any batch sees the batches an uninterrupted
run sees, and the two backends apply identical crops, flips and lighting to each image.

Train epochs: a permutation of the whole split drawn from (seed, epoch), cut into num_shards
equal contiguous parts (the remainder of the division is left out of that epoch); each shard
delivers floor(part / batch_size) full batches, leaving out the last partial batch (a different
handful of images each epoch, since the order is reshuffled).
Eval epochs: the split in manifest order, cut into num_shards contiguous parts of sizes that
differ by at most one; every image is delivered exactly once, the last batch being smaller.

A plan lists what is asked for; an image found bad on the way (data/bad.py) is left out of its
batch, which is then smaller: the plan, and so every other image's batch and parameters, stay
as they are.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import DataConfig
from .lighting import lighting_shift

# Salts that keep the permutation's and the augmentation's random streams apart.
_PERMUTE, _AUGMENT = 1, 2


@dataclass(frozen=True)
class EpochPlan:
    """Per delivered image, in delivery order: its manifest index, the top-left corner (y, x) of
    its crop in the stored image, whether it is mirrored, and its lighting shift (RGB, 0..255
    units, added to every pixel; None when the epoch has no lighting). Every pixel of the epoch
    is divided by `scale` after the shift."""

    index: np.ndarray    # (n,) int64
    crop_y: np.ndarray   # (n,) int32
    crop_x: np.ndarray   # (n,) int32
    mirror: np.ndarray   # (n,) bool
    shift: np.ndarray | None  # (n, 3) float32
    scale: float
    batch_size: int

    def __len__(self) -> int:
        return -(-len(self.index) // self.batch_size)

    def batch(self, b: int) -> slice:
        return slice(b * self.batch_size, min(len(self.index), (b + 1) * self.batch_size))

    def same_as(self, other: "EpochPlan") -> bool:
        """Whether the two plans deliver the same images in the same batches, cut, mirrored,
        lit and scaled alike."""
        return (self.batch_size, self.scale, self.shift is None) == (other.batch_size, other.scale, other.shift is None) \
            and all(np.array_equal(a, b) for a, b in ((self.index, other.index), (self.crop_y, other.crop_y),
                                                      (self.crop_x, other.crop_x), (self.mirror, other.mirror),
                                                      (self.shift, other.shift)))


def shard_bounds(n: int, shard_id: int, num_shards: int) -> tuple[int, int]:
    return n * shard_id // num_shards, n * (shard_id + 1) // num_shards


def ten_crop_positions(stored: int, crop: int) -> list[tuple[int, int, bool]]:
    """The paper's 10 patches as (y, x, mirrored): centre, top-left, top-right, bottom-left,
    bottom-right, then the same five mirrored. The centre is at ((S - s) // 2, (S - s) // 2)."""
    m, c = stored - crop, (stored - crop) // 2
    five = [(c, c), (0, 0), (0, m), (m, 0), (m, m)]
    return [(y, x, False) for y, x in five] + [(y, x, True) for y, x in five]


def lighting_on(d: DataConfig, epoch: int) -> bool:
    """Whether training epoch `epoch` (0-based) gets PCA lighting."""
    return d.lighting_std > 0 and (d.lighting_until_epoch is None or epoch < d.lighting_until_epoch)


def _chunked(per_image: np.ndarray, chunk: int) -> np.ndarray:
    """Each chunk of `chunk` consecutive images takes the value drawn for its first image."""
    if chunk == 1:
        return per_image
    return np.repeat(per_image[::chunk], chunk, axis=0)[:len(per_image)]


def train_plan(n: int, d: DataConfig, *, seed: int, epoch: int, shard_id: int, num_shards: int, stored: int,
               crop: int, eigvals: np.ndarray, eigvecs: np.ndarray) -> EpochPlan:
    perm = np.random.default_rng([seed, epoch, _PERMUTE]).permutation(n)
    part = n // num_shards
    mine = perm[shard_id * part:(shard_id + 1) * part]
    rng = np.random.default_rng([seed, epoch, _AUGMENT, shard_id, num_shards])
    # Every parameter is drawn per image for the whole part, dropped tail included, in a fixed
    # order, whatever the settings: changing one (lighting_std, crop_chunk, ...) leaves the
    # other parameters of every image unchanged. A chunk takes its first image's draw.
    span = stored - crop + 1
    crop_y = _chunked(rng.integers(0, span, part), d.crop_chunk).astype(np.int32)
    crop_x = _chunked(rng.integers(0, span, part), d.crop_chunk).astype(np.int32)
    mirror = _chunked(rng.random(part) < 0.5, d.flip_chunk)
    alpha = rng.standard_normal((part, 3)) * d.lighting_std
    keep = part // d.batch_size * d.batch_size
    shift, scale = None, d.input_scale
    if lighting_on(d, epoch):
        shift = lighting_shift(alpha[:keep], eigvals, eigvecs).astype(np.float32)
        if d.lighting_rescale:
            scale = d.input_scale * (1.0 + d.lighting_std)
    return EpochPlan(mine[:keep].astype(np.int64), crop_y[:keep], crop_x[:keep], mirror[:keep], shift, scale,
                     d.batch_size)


def eval_plan(n: int, d: DataConfig, *, shard_id: int, num_shards: int, stored: int, crop: int) -> EpochPlan:
    lo, hi = shard_bounds(n, shard_id, num_shards)
    k = hi - lo
    c = (stored - crop) // 2
    return EpochPlan(np.arange(lo, hi, dtype=np.int64), np.full(k, c, np.int32), np.full(k, c, np.int32),
                     np.zeros(k, bool), None, d.input_scale, d.batch_size)
