"""`make_loader`: batches for training or evaluation, from DALI or from the torch fallback.

Every batch is (images, labels) on column A's device (the model copies images to column B's):
images float32, (N, 3, s, s), or (N, 10, 3, s, s) for the 10-patch test, s = model.input_size;
labels int64 (N,). A pixel is (stored - mean image + lighting shift) / data.input_scale, where
the mean image is cropped (and mirrored) with the image. See plan.py for what an epoch holds.
"""
from __future__ import annotations

import abc
import functools
import io
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..config import Config
from ..devices import Placement
from ..errors import DataError
from .layout import Dataset, open_dataset
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


@functools.lru_cache(maxsize=None)
def dali_problem(device: str) -> str | None:
    """Why DALI cannot decode on `device` ('cpu' or 'cuda:N') here, or None when it can. Runs a
    one-image pipeline once per process: an importable DALI may still lack its GPU libraries."""
    try:
        from nvidia.dali import fn, pipeline_def, types
    except ImportError as e:
        return f"nvidia.dali cannot be imported ({e})"
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, "JPEG")
    jpeg = np.frombuffer(buf.getvalue(), np.uint8)
    gpu = device.startswith("cuda")

    @pipeline_def(batch_size=1, num_threads=1)
    def probe():
        data = fn.external_source(source=lambda: [jpeg], batch=True, dtype=types.UINT8)
        return fn.decoders.image(data, device="mixed" if gpu else "cpu")

    try:
        pipe = probe(**({"device_id": torch.device(device).index or 0} if gpu else {}))
        pipe.build()
        pipe.run()
        del pipe
    except Exception as e:  # DALI raises RuntimeError and friends for a missing GPU or library
        return f"DALI cannot run a pipeline on {device} ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    return None


def make_loader(cfg: Config, root: Path, split: str, placement: Placement, *, train: bool, ten_crop: bool = False,
                seed: int = 0, shard_id: int = 0, num_shards: int = 1, backend: str | None = None) -> Loader:
    """A loader of `split` of the dataset at `root`; backend None means cfg.data.loader
    ('auto': DALI when it imports and runs here, else torch)."""
    if ten_crop and train:
        raise DataError("the 10-patch views are for evaluation: ten_crop needs train=False")
    if not 0 <= shard_id < num_shards:
        raise DataError(f"shard {shard_id} of {num_shards} does not exist")
    dataset = open_dataset(root)
    if dataset.image_size != cfg.data.image_size:
        raise DataError(f"{root} holds {dataset.image_size}x{dataset.image_size} images but the config's "
                        f"data.image_size is {cfg.data.image_size}")
    if len(dataset.classes) > cfg.model.num_classes:
        raise DataError(f"{root} has {len(dataset.classes)} classes but the config's model.num_classes "
                        f"is {cfg.model.num_classes}")
    which = backend or cfg.data.loader
    device = str(placement.a)
    if which == "auto":
        which = "dali" if dali_problem(device) is None else "torch"
    elif which == "dali":
        problem = dali_problem(device)
        if problem is not None:
            raise DataError(f"data.loader is dali but {problem}; use data.loader=torch or auto")
    elif which != "torch":
        raise DataError(f"unknown loader backend '{which}'; use auto, dali or torch")
    if which == "dali":
        from .dali_loader import DaliLoader as cls
    else:
        from .torch_loader import TorchLoader as cls
    return cls(cfg, dataset, split, placement, train=train, ten_crop=ten_crop, seed=seed,
               shard_id=shard_id, num_shards=num_shards)
