"""The DALI loader: one pipeline per epoch and process reads the epoch's files in the plan's
order (fn.readers.file over the shard's part of the manifest), decodes each image once (on the
CPU without a GPU; "mixed", i.e. on the GPU, with one), subtracts the mean image, and crops,
mirrors, adds the lighting shift and scales in one crop_mirror_normalize. The random parameters
come from the plan through an external source, so DALI draws nothing itself.

What holds: an epoch, and an epoch resumed at any batch, is bit-for-bit the same on every run.
On the CPU, DALI decodes with the same libjpeg-turbo as Pillow: its batches equal the torch
loader's to within 1e-3 of a 0..255 level (float rounding; bit-equal with input_scale 1). On a
GPU, nvJPEG's decode may differ from Pillow's by a few levels; that path is not yet measured."""
from __future__ import annotations

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types

from .loader import Loader
from .plan import EpochPlan


def _normalised(pos: np.ndarray, span: int) -> np.ndarray:
    # DALI places a crop at round(p * (S - s)) for a normalised position p.
    return (pos / span if span else np.zeros_like(pos)).astype(np.float32)


@pipeline_def
def _pipeline(files, labels, root, mean, crop, scale, gpu, views, params):
    jpegs, label = fn.readers.file(file_root=root, files=files, labels=labels, random_shuffle=False,
                                   pad_last_batch=True, name="reader")
    images = fn.decoders.image(jpegs, device="mixed" if gpu else "cpu", output_type=types.RGB)
    centred = fn.cast(images, dtype=types.FLOAT) - types.Constant(mean, device="gpu" if gpu else "cpu")

    def cmn(**crop_args):
        return fn.crop_mirror_normalize(centred, crop=(crop, crop), std=scale, dtype=types.FLOAT,
                                        output_layout="CHW", **crop_args)

    if views is None:
        y, x, mirror, shift = fn.external_source(source=params, num_outputs=4, batch=True,
                                                 dtype=[types.FLOAT, types.FLOAT, types.INT32, types.FLOAT])
        out = cmn(crop_pos_y=y, crop_pos_x=x, mirror=mirror, mean=-shift)
    else:
        outs = [cmn(crop_pos_y=y, crop_pos_x=x, mirror=m, mean=0.0) for y, x, m in views]
        out = fn.stack(*outs) if len(outs) > 1 else outs[0]
    return out, label


class DaliLoader(Loader):
    backend = "dali"

    def _batches(self, plan: EpochPlan, start: int):
        nb, bs = len(plan), self.batch_size
        if start >= nb:
            return
        rows = slice(start * bs, len(plan.index))
        index = plan.index[rows]
        span = self.stored - self.crop
        y, x = _normalised(plan.crop_y[rows], span), _normalised(plan.crop_x[rows], span)
        mirror, shift = plan.mirror[rows].astype(np.int32), plan.shift[rows]
        n = len(index)

        def params(i: int):
            # DALI prefetches past the last batch; those iterations are never read.
            lo = (i * bs) % n
            take = np.arange(lo, lo + bs) % n
            return y[take], x[take], mirror[take], shift[take]

        # Eval crops are fixed: scalar arguments (the 10 patches, or the plan's centre crop).
        views = None
        if not self.train:
            fixed = self.views or [(int(plan.crop_y[0]), int(plan.crop_x[0]), False)]
            views = [(float(_normalised(np.float64(py), span)), float(_normalised(np.float64(px), span)), int(m))
                     for py, px, m in fixed]
        gpu = self.placement.a.type == "cuda"
        pipe = _pipeline(batch_size=bs, num_threads=max(1, self.cfg.data.workers), prefetch_queue_depth=2,
                         files=[self.files[i] for i in index], labels=[int(l) for l in self.labels[index]],
                         root=str(self.dataset.root), mean=self.dataset.mean, crop=self.crop,
                         scale=self.cfg.data.input_scale, gpu=gpu, views=views, params=params,
                         **({"device_id": self.placement.a.index or 0} if gpu else {}))
        pipe.build()
        try:
            for b in range(nb - start):
                images, labels = pipe.run()
                k = min(bs, n - b * bs)
                yield self._to_torch(images, k), self._labels(labels, k)
        finally:
            del pipe

    def _to_torch(self, out, k: int) -> torch.Tensor:
        t = out.as_tensor()
        if self.placement.a.type != "cuda":
            return torch.from_numpy(np.array(t)[:k])
        from nvidia.dali.plugin.pytorch import feed_ndarray
        dst = torch.empty(t.shape(), dtype=torch.float32, device=self.placement.a)
        feed_ndarray(t, dst, cuda_stream=torch.cuda.current_stream(self.placement.a))
        return dst[:k]

    def _labels(self, labels, k: int) -> torch.Tensor:
        t = torch.from_numpy(np.array(labels.as_tensor()).reshape(-1)[:k].astype(np.int64))
        return t.to(self.placement.a, non_blocking=True) if self.placement.a.type == "cuda" else t
