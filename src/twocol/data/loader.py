"""`make_loader`: batches for training or evaluation (see base.py for what they hold), from
DALI where it runs (decoding on column A's GPU or on the host) or from the torch + Pillow
fallback."""
from __future__ import annotations

import dataclasses
import functools
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import Config
from ..devices import Placement
from ..errors import DataError
from ..threads import at_most_cpus
from .base import Loader
from .layout import open_dataset
from .torch_loader import TorchLoader


@functools.lru_cache(maxsize=None)
def dali_problem(device: str) -> str | None:
    """Why DALI cannot decode on `device` ('cpu', or 'cuda:N' for its mixed decoder) here, or
    None when it can. Runs a one-image pipeline once per process: an importable DALI may still
    lack its GPU libraries, or see other GPUs than torch does."""
    try:  # DALI is optional: without it (or without its GPU libraries) the torch loader runs
        from nvidia.dali import backend, fn, pipeline_def, types
    except ImportError as e:
        return f"nvidia.dali cannot be imported ({e})"

    gpu = device.startswith("cuda")
    if gpu:
        index = torch.device(device).index or 0
        try:
            seen = backend.GetCUDADeviceCount()
        except Exception as e:  # a DALI without CUDA support raises here
            return f"DALI sees no CUDA device ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        if index >= seen:
            return f"DALI sees {seen} CUDA device(s), so not {device}"
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, "JPEG")
    jpeg = np.frombuffer(buf.getvalue(), np.uint8)

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


def choose_backend(cfg: Config, placement: Placement, backend: str | None = None) -> tuple[str, str]:
    """(loader, where DALI decodes) for this config and placement: ("torch", "cpu"),
    ("dali", "cpu") or ("dali", "mixed"). A choice that cannot run here is a DataError."""
    d = cfg.data
    which = backend or d.loader
    if which not in ("auto", "dali", "torch"):
        raise DataError(f"unknown loader backend '{which}'; use auto, dali or torch")
    gpu = placement.a.type == "cuda"
    if d.decoder == "mixed" and not gpu and which != "torch":
        raise DataError(f"data.decoder is mixed (DALI decoding on column A's GPU) but --gpus {placement.spec} "
                        "puts column A on the CPU; use data.decoder=cpu or auto, or a GPU placement")
    if which == "torch":
        return "torch", "cpu"
    mixed = str(placement.a)
    if d.decoder == "mixed" or (d.decoder == "auto" and gpu):
        problem = dali_problem(mixed)
        if problem is None:
            return "dali", "mixed"
        if d.decoder == "mixed":
            raise DataError(f"data.decoder is mixed but {problem} (--gpus {placement.spec}); "
                            "use data.decoder=cpu, data.loader=torch, or --gpus naming a GPU DALI sees")
    problem = dali_problem("cpu")
    if problem is None:
        return "dali", "cpu"
    if which == "dali":
        raise DataError(f"data.loader is dali but {problem}; use data.loader=torch or auto")
    return "torch", "cpu"


def make_loader(cfg: Config, root: Path, split: str, placement: Placement, *, train: bool, ten_crop: bool = False,
                seed: int = 0, shard_id: int = 0, num_shards: int = 1, backend: str | None = None) -> Loader:
    """A loader of `split` of the dataset at `root`, for shard `shard_id` of `num_shards`
    (torchrun's rank and world size); backend None means cfg.data.loader ('auto': DALI when it
    imports and runs here, else torch). DALI decodes where data.decoder says (auto: on column
    A's GPU when it can)."""
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
    which, decoder = choose_backend(cfg, placement, backend)
    workers = at_most_cpus(cfg.data.workers, f"data.workers={cfg.data.workers}")
    if workers != cfg.data.workers:  # the run's own config (and checkpoint) keeps the value asked for
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, workers=workers))
    args = (cfg, dataset, split, placement)
    kw = dict(train=train, ten_crop=ten_crop, seed=seed, shard_id=shard_id, num_shards=num_shards)
    if which == "dali":
        from .dali_loader import DaliLoader  # imports DALI, which is optional
        return DaliLoader(*args, decoder=decoder, **kw)
    return TorchLoader(*args, **kw)
