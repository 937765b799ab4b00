"""The interface every loader implements, and what its batches hold.

`loader.epoch(e)` yields (inputs, labels) per batch:
  inputs  ColumnInputs (inputs.py): the batch on each column's device, put there by the
          pipeline (feed.py); float32 (N, 3, s, s), or (N, 10, 3, s, s) for the 10-patch
          test, s = model.input_size. A pixel is
              (stored - mean window + lighting shift) / scale
          with the mean image cut (and mirrored) with the crop, or its centre crop
          (data.mean_window), the shift and scale of the epoch plan (plan.py).
  labels  int64 (N,), on column A's device (where fc8 and the loss are).
N is the plan's batch size less the batch's bad images (bad.py): 0 when all of them are bad.

A backend implements `_batches`: for each batch, the uint8 crops of its good images (cut and
mirrored, on the host or on column A's GPU) and the bad images it met. The base class feeds
them to the devices and keeps the list of bad images (`take_bad`) and the bytes moved
(`feed_bytes`).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from ..config import Config, DataConfig
from ..devices import Placement
from ..inputs import ColumnInputs
from .bad import BadImage, check_files
from .feed import Feeder
from .layout import Dataset
from .plan import EpochPlan, eval_plan, ten_crop_positions, train_plan


@dataclass
class RawBatch:
    """What a backend delivers for batch `batch` of a plan: the plan rows of its good images,
    in plan order, their uint8 crops (float32 already normalised when `normalised`), and the
    (row, reason) of its bad images."""

    batch: int
    rows: np.ndarray
    pixels: object
    bad: list[tuple[int, str]] = field(default_factory=list)
    normalised: bool = False

    def pin_memory(self) -> "RawBatch":
        """Called by torch's DataLoader (pin_memory=True) on its pinning thread."""
        if not self.normalised:
            self.pixels = self.pixels.pin_memory()
        return self


def split_rows(plan: EpochPlan, b: int, excluded: dict[int, str]) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """The rows of batch b whose files were not left out at start, and the (row, reason) of
    those that were."""
    rows = np.arange(plan.batch(b).start, plan.batch(b).stop)
    if not excluded:
        return rows, []
    out = [(int(r), excluded[int(plan.index[r])]) for r in rows if int(plan.index[r]) in excluded]
    return np.array([r for r in rows if int(plan.index[r]) not in excluded], np.int64), out


class Loader(abc.ABC):
    """The batches of one split for one shard. `len(loader)` is the number of batches per
    epoch; `loader.epoch(e, start_batch)` iterates over epoch e from batch start_batch."""

    backend = ""
    checks_jpeg_headers = False  # whether the start-up check reads each file's JPEG header

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
        # The fixed views of evaluation (the 10 patches, or the centre crop); None in training,
        # where each image has its own crop from the plan.
        c = (self.stored - self.crop) // 2
        self.views = None if train else ten_crop_positions(self.stored, self.crop) if ten_crop else [(c, c, False)]
        # Files that no longer match the dataset's checksums: left out of every epoch. Files
        # that are no plain JPEG of the dataset's size: found only for a backend that asks.
        self.excluded, self.not_plain_jpeg = check_files(dataset, split, cfg.data.verify_files,
                                                         self.stored if self.checks_jpeg_headers else None)
        self.feeder = Feeder(placement, dataset.mean, self.crop, cfg.data.mean_window)
        self._bad: list[BadImage] = []
        first = self.plan(0)
        self._len, self._num_images = len(first), len(first.index)

    def plan(self, epoch: int, data: DataConfig | None = None, seed: int | None = None) -> EpochPlan:
        """Epoch `epoch`'s plan; with `data` or `seed` in place of this loader's, the plan that
        those settings would make of the same files (a resumed run compares them)."""
        n, d, ds = len(self.files), data or self.cfg.data, self.dataset
        if self.train:
            return train_plan(n, d, seed=self.seed if seed is None else seed, epoch=epoch, shard_id=self.shard_id,
                              num_shards=self.num_shards, stored=self.stored, crop=self.crop, eigvals=ds.eigvals,
                              eigvecs=ds.eigvecs)
        return eval_plan(n, d, shard_id=self.shard_id, num_shards=self.num_shards, stored=self.stored, crop=self.crop)

    def __len__(self) -> int:
        return self._len

    @property
    def num_images(self) -> int:
        """Images the plan asks for per epoch from this shard (bad ones included)."""
        return self._num_images

    def excluded_in(self, epoch: int) -> list[BadImage]:
        """The files left out at start that epoch `epoch` asks for, in the plan's order."""
        if not self.excluded:
            return []
        return [BadImage(int(i), self.files[i], self.excluded[int(i)]) for i in self.plan(epoch).index
                if int(i) in self.excluded]

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[ColumnInputs, torch.Tensor]]:
        if epoch < 0 or not 0 <= start_batch <= len(self):
            raise ValueError(f"epoch {epoch}, start_batch {start_batch}: need epoch >= 0 and "
                             f"0 <= start_batch <= {len(self)}")
        return self._deliver(self.plan(epoch), start_batch)

    def _deliver(self, plan: EpochPlan, start: int):
        for raw in self._batches(plan, start):
            for row, reason in raw.bad:
                i = int(plan.index[row])
                self._bad.append(BadImage(i, self.files[i], reason))
            yield self.feeder.deliver(raw.pixels, self.labels[plan.index[raw.rows]], plan, raw.rows, self.views,
                                      normalised=raw.normalised)

    def take_bad(self) -> list[BadImage]:
        """The bad images met since the last call, in the order they were met."""
        bad, self._bad = self._bad, []
        return bad

    def feed_bytes(self) -> dict[str, int]:
        """Bytes moved to each column's device since the last reset_feed_bytes()."""
        return dict(self.feeder.bytes)

    def reset_feed_bytes(self) -> None:
        self.feeder.bytes = {"A": 0, "B": 0}

    @abc.abstractmethod
    def _batches(self, plan: EpochPlan, start: int) -> Iterator[RawBatch]:
        """The batches of `plan` from batch `start` on, as uint8 crops of their good images."""
