"""The fallback loader: Pillow decodes, numpy crops and normalises, torch DataLoader workers
run it in parallel. Each worker builds whole batches, so one tensor per batch crosses from a
worker to the main process."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from .base import Loader
from .plan import EpochPlan


def decode(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as im:
        pixels = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    if pixels.shape != (size, size, 3):
        raise DataError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]}, not the dataset's {size}x{size}")
    return pixels


def normalise(images: list[np.ndarray], crop_y, crop_x, mirror, shift, mean_chw: np.ndarray, crop: int,
              scale: float) -> np.ndarray:
    """(stored crop - mean crop + shift) / scale for each image: (n, 3, crop, crop) float32."""
    out = np.empty((len(images), 3, crop, crop), np.float32)
    for i, img in enumerate(images):
        y, x = crop_y[i], crop_x[i]
        win = img[y:y + crop, x:x + crop].transpose(2, 0, 1)
        mwin = mean_chw[:, y:y + crop, x:x + crop]
        if mirror[i]:
            win, mwin = win[..., ::-1], mwin[..., ::-1]
        np.subtract(win, mwin, out=out[i])
    out += np.asarray(shift, np.float32)[:, :, None, None]
    out /= np.float32(scale)
    return out


class _Batches(torch.utils.data.Dataset):
    def __init__(self, loader: "TorchLoader", plan: EpochPlan, start: int):
        self.root, self.files, self.labels = loader.dataset.root, loader.files, loader.labels
        self.size, self.crop, self.scale = loader.stored, loader.crop, loader.cfg.data.input_scale
        self.mean_chw = np.ascontiguousarray(loader.dataset.mean.transpose(2, 0, 1))
        self.views, self.plan, self.start = loader.views, plan, start

    def __len__(self) -> int:
        return len(self.plan) - self.start

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.plan
        rows = p.batch(self.start + b)
        index = p.index[rows]
        images = [decode(self.root / self.files[i], self.size) for i in index]
        if self.views is None:
            x = normalise(images, p.crop_y[rows], p.crop_x[rows], p.mirror[rows], p.shift[rows],
                          self.mean_chw, self.crop, self.scale)
        else:
            n, zero = len(images), np.zeros((len(images), 3), np.float32)
            x = np.stack([normalise(images, np.full(n, y), np.full(n, x0), np.full(n, m), zero,
                                    self.mean_chw, self.crop, self.scale)
                          for y, x0, m in self.views], axis=1)
        return torch.from_numpy(x), torch.from_numpy(self.labels[index])


def _one_thread(_worker_id: int) -> None:
    # Workers are processes already: threads inside them would only fight over the cores.
    torch.set_num_threads(1)


class TorchLoader(Loader):
    backend = "torch"

    def _batches(self, plan: EpochPlan, start: int):
        workers = self.cfg.data.workers
        cuda = self.placement.a.type == "cuda"
        batches = torch.utils.data.DataLoader(
            _Batches(self, plan, start), batch_size=None, shuffle=False, num_workers=workers,
            pin_memory=cuda, worker_init_fn=_one_thread if workers else None,
            prefetch_factor=2 if workers else None)
        for images, labels in batches:
            if cuda:
                images = images.to(self.placement.a, non_blocking=True)
                labels = labels.to(self.placement.a, non_blocking=True)
            yield images, labels
