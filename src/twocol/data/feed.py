"""How a batch reaches the columns' devices: each device is fed by the pipeline itself.

A loader decodes each image once, into a uint8 crop (cut and mirrored as the plan says), on the
host or, with DALI's mixed decoder, on column A's GPU. The Feeder then, for each distinct
column device, copies the uint8 crops there (unless they are there already), copies the few
numbers normalisation needs per crop (its mean window and lighting shift, as float32), and
normalises there with `normalise`. Both columns thus get identical inputs, computed on their
own devices, and column B's never passes through column A. uint8 moves a quarter of the bytes
of the float32 input (150,528 instead of 602,112 bytes per 224-pixel crop).

Feed bytes, counted per column device as the copies are made: the crops (3 s^2 per image, per
view), the per-crop numbers (12 bytes for a mean window that varies per crop, 12 for a lighting
shift) and the labels (8 bytes, column A only). Nothing is counted for a device that already
holds the data: the CPU simulation and --gpus 0 feed column B nothing, and the host feeds
itself for free. DALI's own transfers inside its mixed decoder (the compressed JPEG bytes) are
not counted: they are the same whatever the placement.
"""
from __future__ import annotations

import numpy as np
import torch

from ..config import Config
from ..devices import Placement
from ..inputs import ColumnInputs
from .normalise import MeanImage, normalise
from .plan import EpochPlan, lighting_on

HOST = torch.device("cpu")


def targets(placement: Placement) -> list[tuple[str, torch.device]]:
    """The distinct devices of the columns, by the first column that lives there."""
    out = [("A", placement.a)]
    if placement.b != placement.a:
        out.append(("B", placement.b))
    return out


class Feeder:
    """Delivers a loader's uint8 crops to every column device, normalised there, and counts the
    bytes it moves to each (`bytes`, reset by the caller)."""

    def __init__(self, placement: Placement, mean_hwc: np.ndarray, crop: int, mean_window: str):
        self.placement, self.crop, self.mean_window = placement, crop, mean_window
        self.targets = targets(placement)
        self.means = {name: MeanImage(mean_hwc, crop, dev) for name, dev in self.targets}
        self.centre = ((mean_hwc.shape[0] - crop) // 2,) * 2 + (False,)
        self.pin = any(dev.type == "cuda" for _, dev in self.targets)
        self.bytes = {"A": 0, "B": 0}

    @property
    def host_only(self) -> bool:
        """Every column runs on the host: the loader may normalise where it decodes."""
        return all(dev.type == "cpu" for _, dev in self.targets)

    def windows(self, plan: EpochPlan, rows: np.ndarray, views):
        """Per view (one for training), each crop's mean window: (k, 3) int32 or one tuple."""
        if self.mean_window == "centre":
            return [self.centre] * (1 if views is None else len(views))
        if views is None:
            return [np.stack([plan.crop_y[rows], plan.crop_x[rows], plan.mirror[rows]], 1).astype(np.int32)]
        return [tuple(v) for v in views]

    def host_normalise(self, pixels: np.ndarray, plan: EpochPlan, rows: np.ndarray, views) -> np.ndarray:
        """The crops normalised on the host, where they are decoded: what the torch loader's
        workers do when every column runs on the host (host_only)."""
        shift = plan.shift[rows] if plan.shift is not None else None
        return self._normalise(pixels, self.windows(plan, rows, views), shift, plan.scale, self.means["A"])

    def deliver(self, pixels, labels: np.ndarray, plan: EpochPlan, rows: np.ndarray, views,
                normalised: bool = False) -> tuple[ColumnInputs, torch.Tensor]:
        """ColumnInputs and labels (on column A's device) for the images at `rows` of `plan`.

        pixels: uint8 crops (k, 3, s, s), or (k, V, 3, s, s) for V fixed views: a numpy array or
        a host tensor (pinned where a GPU is fed) or a tensor on column A's GPU. With
        `normalised`, they are float32 crops already normalised on the host (host_only)."""
        windows = self.windows(plan, rows, views)
        shift = plan.shift[rows] if plan.shift is not None else None
        per_crop = [w.astype(np.float32) for w in windows if not isinstance(w, tuple)]
        cols = per_crop + ([shift] if shift is not None else [])
        # What a device gets from the host, staged once in pinned memory where a GPU is fed.
        params = self._host(np.concatenate(cols, 1)) if cols else None
        if not normalised and (isinstance(pixels, np.ndarray) or pixels.device.type == "cpu"):
            pixels = self._host(pixels)
        outs = {}
        for name, dev in self.targets:
            if normalised:
                outs[name] = pixels
            elif dev.type == "cpu":
                px = pixels
                if px.device != dev:
                    self.bytes[name] += px.numel()
                    px = px.to(dev)
                outs[name] = torch.from_numpy(self._normalise(px.numpy(), windows, shift, plan.scale, self.means[name]))
            else:
                px = self._to(pixels, dev, name)
                p = self._to(params, dev, name) if params is not None else None
                dev_windows = [w if isinstance(w, tuple) else p[:, :3].long() for w in windows]
                dev_shift = p[:, -3:] if shift is not None else None
                outs[name] = self._normalise(px, dev_windows, dev_shift, plan.scale, self.means[name])
        y = self._host(labels)
        if self.placement.a.type != "cpu":
            y = self._to(y, self.placement.a, "A")
        return ColumnInputs(outs["A"], outs.get("B", outs["A"])), y

    def _host(self, x) -> torch.Tensor:
        """A host array or tensor as a tensor, in pinned memory where a GPU is fed."""
        t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
        return t.pin_memory() if self.pin and not t.is_pinned() else t

    def _to(self, t: torch.Tensor, dev: torch.device, name: str) -> torch.Tensor:
        """t on `dev` (without blocking), counting the bytes when that is a copy."""
        if t.device == dev:
            return t
        self.bytes[name] += t.numel() * t.element_size()
        return t.to(dev, non_blocking=True)

    @staticmethod
    def _normalise(px, windows, shift, scale, mean: MeanImage):
        """normalise() over a batch of one crop per image (k, 3, s, s) or of V views per image
        (k, V, 3, s, s), with the mean windows of each view."""
        if px.ndim == 4:
            return normalise(px, windows[0], shift, scale, mean)
        out = (np.empty(px.shape, np.float32) if isinstance(px, np.ndarray)
               else torch.empty(px.shape, dtype=torch.float32, device=px.device))
        for v, w in enumerate(windows):
            normalise(px[:, v], w, shift, scale, mean, out=out[:, v])
        return out


def feed_bytes_per_image(cfg: Config, placement: Placement, decode: str) -> dict[str, int]:
    """Bytes a loader moves to each column's device per training image of the first epoch
    (the Feeder's count), with the images decoded on the host ("host") or on column A's GPU
    ("gpu")."""
    d, s = cfg.data, cfg.model.input_size
    source = placement.a if decode == "gpu" else HOST
    params = 4 * ((3 if d.mean_window == "crop" else 0) + (3 if lighting_on(d, 0) else 0))
    out = {"A": 0, "B": 0}
    for name, dev in targets(placement):
        if dev != source:
            out[name] += 3 * s * s
        if dev.type != "cpu":
            out[name] += params
    if placement.a.type != "cpu":
        out["A"] += 8
    return out
