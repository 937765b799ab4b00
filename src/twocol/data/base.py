"""The interface every loader implements, and what its batches hold.

Every batch is (images, labels) on column A's device (the model copies images to column B's):
images float32, (N, 3, s, s), or (N, 10, 3, s, s) for the 10-patch test, s = model.input_size;
labels int64 (N,). A pixel is (stored - mean image + lighting shift) / data.input_scale, where
the mean image is cropped (and mirrored) with the image. See plan.py for what an epoch holds.
"""
from __future__ import annotations

import abc
from typing import Iterator

import numpy as np
import torch

from ..config import Config
from ..devices import Placement
from .layout import Dataset
from .plan import EpochPlan, eval_plan, ten_crop_positions, train_plan


class Loader(abc.ABC):
    """The batches of one split for one shard. `len(loader)` is the number of batches per
    epoch; `loader.epoch(e, start_batch)` iterates over epoch e from batch start_batch."""

    backend = ""

    def __init__(self, cfg: Config, dataset: Dataset, split: str, placement: Placement, *, train: bool,
                 ten_crop: bool, seed: int, shard_id: int, num_shards: int):
        self.cfg, self.dataset, self.split, self.placement = cfg, dataset, split, placement
        self.train, self.ten_crop, self.seed = train, ten_crop, seed
        self.shard_id, self.num_shards = shard_id, num_shards
        items = dataset.split(split)
        self.files = [rel for rel, _ in items]
        self.labels = np.array([label for _, label in items], np.int64)
        self.batch_size = cfg.data.batch_size
        self.stored, self.crop = dataset.image_size, cfg.model.input_size
        # The 10 views, or the one fixed eval view; None: per-image views from the plan.
        self.views = (ten_crop_positions(self.stored, self.crop) if ten_crop else None)
        self._len = len(self.plan(0))

    def plan(self, epoch: int) -> EpochPlan:
        n, d = len(self.files), self.cfg.data
        if self.train:
            return train_plan(n, seed=self.seed, epoch=epoch, shard_id=self.shard_id, num_shards=self.num_shards,
                              batch_size=self.batch_size, stored=self.stored, crop=self.crop,
                              crop_chunk=d.crop_chunk, lighting_std=d.lighting_std,
                              eigvals=self.dataset.eigvals, eigvecs=self.dataset.eigvecs)
        return eval_plan(n, shard_id=self.shard_id, num_shards=self.num_shards, batch_size=self.batch_size,
                         stored=self.stored, crop=self.crop)

    def __len__(self) -> int:
        return self._len

    @property
    def num_images(self) -> int:
        """Images delivered per epoch by this shard."""
        return len(self.plan(0).index)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if epoch < 0 or not 0 <= start_batch <= len(self):
            raise ValueError(f"epoch {epoch}, start_batch {start_batch}: need epoch >= 0 and "
                             f"0 <= start_batch <= {len(self)}")
        return self._batches(self.plan(epoch), start_batch)

    @abc.abstractmethod
    def _batches(self, plan: EpochPlan, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of `plan` from batch `start` on."""
