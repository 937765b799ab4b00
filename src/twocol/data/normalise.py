"""The last step of every loader, on every column's device: uint8 crops to the net's input.

    out = (crop - mean window + lighting shift) / scale        (float32, computed in that order)

`normalise` is the one function that does it, for both loaders and every device: on the host
it works on numpy arrays, one crop at a time while the crop is in cache, on one thread (torch's
OpenMP threads spinning beside DALI's slowed the host path tenfold); on a GPU, on torch tensors,
a handful of kernels per batch. The two paths do the same float32 operations in the same order,
so they give the same bits (tests/test_data_feed.py checks it).

The mean window of a crop is given as (y, x, mirrored): the stored image's mean cut at (y, x)
and mirrored or not. data.mean_window "crop" passes each crop's own position and flip (the
paper's reading), "centre" the centre crop, unmirrored, for every crop (the 2012 code).
"""
from __future__ import annotations

import numpy as np
import torch


class MeanImage:
    """The dataset's mean image on one device, with its mirror image, ready to be cut into
    crop-sized windows: a torch tensor on the device and, on the host, the numpy array that
    shares its memory."""

    def __init__(self, mean_hwc: np.ndarray, crop: int, device: torch.device):
        chw = np.ascontiguousarray(mean_hwc.transpose(2, 0, 1), np.float32)
        table = np.ascontiguousarray(np.stack([chw, chw[..., ::-1]]))  # (2, 3, S, S): plain, mirrored
        self.side, self.crop, self.device = chw.shape[-1], crop, device
        self.array = table if device.type == "cpu" else None
        self.tensor = torch.from_numpy(table).to(device)
        self._offsets = torch.arange(crop, device=device)
        self._divisors: dict[float, torch.Tensor] = {}

    def window(self, y: int, x: int, mirrored: bool, numpy: bool = False):
        """The (3, s, s) window for a crop at (y, x), mirrored or not: a view of the array
        (numpy) or of the tensor."""
        s = self.crop
        x0 = self.side - x - s if mirrored else x
        return (self.array if numpy else self.tensor)[int(mirrored), :, y:y + s, x0:x0 + s]

    def windows(self, yxm: torch.Tensor) -> torch.Tensor:
        """The windows of n crops at once on the device: yxm (n, 3) int64 -> (n, 3, s, s)."""
        y, x, m = yxm[:, 0], yxm[:, 1], yxm[:, 2]
        x0 = torch.where(m.bool(), self.side - x - self.crop, x)
        rows = (y[:, None] + self._offsets)[:, :, None]   # (n, s, 1)
        cols = (x0[:, None] + self._offsets)[:, None, :]  # (n, 1, s)
        return self.tensor[m[:, None, None], :, rows, cols].permute(0, 3, 1, 2)  # (n, s, s, 3) -> (n, 3, s, s)

    def divisor(self, scale: float) -> torch.Tensor:
        """`scale` as a float32 tensor on the device (made once per value)."""
        if scale not in self._divisors:
            self._divisors[scale] = torch.tensor(scale, dtype=torch.float32, device=self.device)
        return self._divisors[scale]


def normalise(pixels, windows, shift, scale: float, mean: MeanImage, out=None):
    """(pixels - mean window + shift) / scale as float32, on pixels' device.

    pixels: (n, 3, s, s) uint8, crops already cut and mirrored.
    windows: each crop's mean window, (n, 3) integers (y, x, mirrored), or one (y, x, mirrored)
        tuple for every crop.
    shift: (n, 3) float32 lighting shift per crop, or None for none.
    All numpy arrays (on the host), or all torch tensors on `mean.device` (any device, the
    host included); `out`: (n, 3, s, s) float32, a strided view allowed, or None for a new one."""
    one = isinstance(windows, tuple)
    if isinstance(pixels, np.ndarray):
        if out is None:
            out = np.empty(pixels.shape, np.float32)
        divisor = np.float32(scale)
        if one and shift is None:  # the eval path: one window for the whole batch
            np.subtract(pixels, mean.window(*windows, numpy=True)[None], out=out)
            if scale != 1.0:
                out /= divisor
            return out
        for i in range(len(pixels)):
            o = out[i]
            np.subtract(pixels[i], mean.window(*(windows if one else windows[i]), numpy=True), out=o)
            if shift is not None:
                o += shift[i][:, None, None]
            if scale != 1.0:
                o /= divisor
        return out
    if out is None:
        out = torch.empty(pixels.shape, dtype=torch.float32, device=pixels.device)
    torch.sub(pixels, mean.window(*windows) if one else mean.windows(windows), out=out)
    if shift is not None:
        out += shift[:, :, None, None]
    if scale != 1.0:
        # A tensor, not a Python number: CUDA divides by a number as a multiplication by its
        # reciprocal, which rounds differently from the host's division.
        out /= mean.divisor(scale)
    return out
