"""`make_loader`: batches for training or evaluation (see base.py for what they hold), from
DALI where it runs or from the torch + Pillow fallback."""
from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import Config
from ..devices import Placement
from ..errors import DataError
from .base import Loader
from .layout import open_dataset
from .torch_loader import TorchLoader


@functools.lru_cache(maxsize=None)
def dali_problem(device: str) -> str | None:
    """Why DALI cannot decode on `device` ('cpu' or 'cuda:N') here, or None when it can. Runs a
    one-image pipeline once per process: an importable DALI may still lack its GPU libraries."""
    try:  # DALI is optional: without it (or without its GPU libraries) the torch loader runs
        from nvidia.dali import fn, pipeline_def, types
    except ImportError as e:
        return f"nvidia.dali cannot be imported ({e})"

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
    cls = TorchLoader
    if which == "dali":
        from .dali_loader import DaliLoader as cls  # imports DALI, which is optional
    return cls(cfg, dataset, split, placement, train=train, ten_crop=ten_crop, seed=seed,
               shard_id=shard_id, num_shards=num_shards)
