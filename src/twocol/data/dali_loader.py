"""The DALI loader: one pipeline per epoch and process reads the epoch's files in the plan's
order (fn.readers.file over the shard's part of the manifest) and decodes each image once, on
the CPU without a GPU, "mixed" (on the GPU) with one. Training images are decoded only inside
their crop window (fn.decoders.image_crop); crop_mirror_normalize then mirrors, adds the lighting
shift and scales. The random parameters come from the plan through an external source, so DALI
draws nothing itself.

The mean image's crop is subtracted afterwards, on column A's device, while the batch is copied
out of DALI's buffer: done inside DALI it cost more than decoding the crop itself (about 0.3
CPU-ms per 224-pixel image for a second crop_mirror_normalize and a subtraction). On the CPU that
is numpy, single-threaded: torch's OpenMP threads spinning beside DALI's slowed it tenfold.

What holds: an epoch, and an epoch resumed at any batch, is bit-for-bit the same on every run.
On the CPU, DALI decodes with the same libjpeg-turbo as Pillow: its batches equal the torch
loader's to within 1e-3 of a 0..255 level (float rounding; bit-equal with input_scale 1 and no
lighting). On a GPU, nvJPEG's decode may differ from Pillow's by a few levels; that path is not
yet measured."""
from __future__ import annotations

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.plugin.pytorch import feed_ndarray

from .base import Loader
from .plan import EpochPlan


def _normalised(pos, span: int) -> np.ndarray:
    # DALI places a crop at round(p * (S - s)) for a normalised position p.
    return (np.asarray(pos, np.float64) / span if span else np.zeros(np.shape(pos))).astype(np.float32)


@pipeline_def
def _pipeline(files, labels, root, crop, scale, gpu, views, params):
    jpegs, label = fn.readers.file(file_root=root, files=files, labels=labels, random_shuffle=False,
                                   pad_last_batch=True, name="reader")
    decoder = dict(device="mixed" if gpu else "cpu", output_type=types.RGB)
    normalise = dict(std=scale, dtype=types.FLOAT, output_layout="CHW")
    if views is None:
        y, x, mirror, shift = fn.external_source(source=params, num_outputs=4, batch=True,
                                                 dtype=[types.FLOAT, types.FLOAT, types.INT32, types.FLOAT])
        window = fn.decoders.image_crop(jpegs, crop=(crop, crop), crop_pos_y=y, crop_pos_x=x, **decoder)
        return fn.crop_mirror_normalize(window, mirror=mirror, mean=-shift, **normalise), label
    images = fn.decoders.image(jpegs, **decoder)
    outs = [fn.crop_mirror_normalize(images, crop=(crop, crop), crop_pos_y=y, crop_pos_x=x, mirror=m, mean=0.0,
                                     **normalise) for y, x, m in views]
    return (fn.stack(*outs) if len(outs) > 1 else outs[0]), label


class DaliLoader(Loader):
    backend = "dali"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        mean = np.ascontiguousarray(self.dataset.mean.transpose(2, 0, 1) / np.float32(self.cfg.data.input_scale))
        mirrored = np.ascontiguousarray(mean[..., ::-1])
        if self.placement.a.type == "cuda":
            mean, mirrored = (torch.from_numpy(m).to(self.placement.a) for m in (mean, mirrored))
        self._mean, self._mean_mirrored = mean, mirrored

    def _mean_window(self, y: int, x: int, mirrored: bool):
        """The scaled mean image cropped (and mirrored) like an image: a (3, s, s) view."""
        s, side = self.crop, self.stored
        if mirrored:
            return self._mean_mirrored[:, y:y + s, side - x - s:side - x]
        return self._mean[:, y:y + s, x:x + s]

    def _batches(self, plan: EpochPlan, start: int):
        nb, bs = len(plan), self.batch_size
        if start >= nb:
            return
        rows = slice(start * bs, len(plan.index))
        index = plan.index[rows]
        span = self.stored - self.crop
        crop_y, crop_x, mirror = plan.crop_y[rows], plan.crop_x[rows], plan.mirror[rows]
        y, x, flip, shift = _normalised(crop_y, span), _normalised(crop_x, span), mirror.astype(np.int32), plan.shift[rows]
        n = len(index)

        def params(i: int):
            # DALI prefetches past the last batch; those iterations are never read.
            take = np.arange(i * bs, (i + 1) * bs) % n
            return y[take], x[take], flip[take], shift[take]

        views = None
        if not self.train:  # fixed crops: the 10 patches, or the plan's centre crop
            views = self.views or [(int(crop_y[0]), int(crop_x[0]), False)]
        gpu = self.placement.a.type == "cuda"
        pipe = _pipeline(batch_size=bs, num_threads=max(1, self.cfg.data.workers), prefetch_queue_depth=2,
                         files=[self.files[i] for i in index], labels=[int(l) for l in self.labels[index]],
                         root=str(self.dataset.root), crop=self.crop, scale=self.cfg.data.input_scale, gpu=gpu,
                         views=None if views is None else
                         [(float(_normalised(vy, span)), float(_normalised(vx, span)), int(m)) for vy, vx, m in views],
                         params=params, **({"device_id": self.placement.a.index or 0} if gpu else {}))
        pipe.build()
        try:
            for b in range(nb - start):
                out, labels = pipe.run()
                k = min(bs, n - b * bs)
                rows_b = slice(b * bs, b * bs + k)
                images = self._minus_mean(out, k, views, crop_y[rows_b], crop_x[rows_b], mirror[rows_b])
                labels = torch.from_numpy(np.asarray(labels.as_tensor()).reshape(-1)[:k].astype(np.int64))
                yield images, labels.to(self.placement.a, non_blocking=True) if gpu else labels
        finally:
            del pipe

    def _minus_mean(self, out, k: int, views, crop_y, crop_x, mirror) -> torch.Tensor:
        """DALI's (image + shift) / scale, minus the scaled mean image's crop, as a new tensor:
        on the CPU read straight from DALI's buffer (valid until the next run), on the GPU
        copied out first and then subtracted in place."""
        t = out.as_tensor()
        if self.placement.a.type == "cuda":
            full = torch.empty(t.shape(), dtype=torch.float32, device=self.placement.a)
            feed_ndarray(t, full, cuda_stream=torch.cuda.current_stream(self.placement.a))
            raw = dst = full[:k]
            sub = torch.sub
        else:
            raw = np.asarray(t)[:k]
            dst = np.empty(raw.shape, np.float32)
            sub = np.subtract
        if views is None:
            for i in range(k):
                sub(raw[i], self._mean_window(int(crop_y[i]), int(crop_x[i]), bool(mirror[i])), out=dst[i])
        elif len(views) == 1:
            sub(raw, self._mean_window(*views[0]), out=dst)
        else:
            for v, (vy, vx, m) in enumerate(views):
                sub(raw[:, v], self._mean_window(vy, vx, m), out=dst[:, v])
        return dst if isinstance(dst, torch.Tensor) else torch.from_numpy(dst)
