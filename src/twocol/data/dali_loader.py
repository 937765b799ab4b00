"""The DALI loader: one pipeline per epoch and process reads the epoch's files in the plan's
order (fn.readers.file over the shard's part of the manifest, so DALI's own sharding stays at
one shard: the plan has already sharded by torchrun rank and world size) and decodes each image
once: on the host with data.decoder=cpu, or "mixed" on column A's GPU (device_id = that GPU,
the process's local device under torchrun) with hardware JPEG decoding where the GPU has it
(data.hw_decoder_load). Training images are decoded only inside their crop window
(fn.decoders.image_crop); crop_mirror_normalize mirrors and lays the crop out as uint8 CHW. The
crop positions and flips come from the plan through an external source, so DALI draws nothing
itself. The Feeder (feed.py) then moves the uint8 crops to each column's device and normalises
them there, with the same function as the torch loader.

Bad images (bad.py): DALI is only given files that passed the start-up check and whose markers
read as a plain JPEG of the dataset's size (bad.jpeg_problem, one read of each file's header
when the loader starts): some malformed files crash DALI's decoder outright (a segmentation
fault, seen here with 600 random bytes) instead of raising an error. Any other file is judged by
Pillow (bad.read_image), as in the torch loader: bad, or decoded by Pillow with the plan's crop
and flip (a CMYK JPEG, a PNG or GIF named .jpg). An image DALI decodes to the wrong size is
dropped from its batch (fn.peek_image_shape gives every image's size). When DALI still fails
on a batch, its files are judged by Pillow, and the pipeline is built again from that batch
without the bad ones; files only DALI refuses (found by decoding each alone) go to Pillow; a
failure with neither is a one-line DataError. Batches with a bad image are padded to the batch
size with a copy of one of their images, which is cut off again.

What holds: an epoch, and an epoch resumed at any batch, is bit-for-bit the same on every run.
On the CPU, DALI decodes with the same libjpeg-turbo as Pillow: its batches equal the torch
loader's bit for bit. nvJPEG (mixed) may differ from Pillow by a few levels (bench/gpu_check.sh
runs the agreement test)."""
from __future__ import annotations

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.plugin.pytorch import feed_ndarray

from ..errors import DataError
from .bad import ImageProblem, one_line, read_image
from .base import Loader, RawBatch, split_rows
from .plan import EpochPlan
from .torch_loader import cut


def _normalised(pos, span: int) -> np.ndarray:
    # DALI places a crop at round(p * (S - s)) for a normalised position p.
    return (np.asarray(pos, np.float64) / span if span else np.zeros(np.shape(pos))).astype(np.float32)


@pipeline_def
def _pipeline(files, root, crop, device, hw_decoder_load, views, params):
    jpegs, _ = fn.readers.file(file_root=root, files=files, labels=[0] * len(files), random_shuffle=False,
                               name="reader")
    shapes = fn.peek_image_shape(jpegs)
    decoder = dict(device=device, output_type=types.RGB)
    if device == "mixed":
        # The host decoders' chroma upsampling, so that GPU and host decodes differ only by
        # their IDCTs' rounding (tests/test_gpu_data.py).
        decoder.update(hw_decoder_load=hw_decoder_load, jpeg_fancy_upsampling=True)
    layout = dict(dtype=types.UINT8, output_layout="CHW")  # mean 0, std 1: only crop, mirror, transpose
    if views is None:
        y, x, mirror = fn.external_source(source=params, num_outputs=3, batch=True,
                                          dtype=[types.FLOAT, types.FLOAT, types.INT32])
        window = fn.decoders.image_crop(jpegs, crop=(crop, crop), crop_pos_y=y, crop_pos_x=x, **decoder)
        return fn.crop_mirror_normalize(window, mirror=mirror, **layout), shapes
    images = fn.decoders.image(jpegs, **decoder)
    outs = [fn.crop_mirror_normalize(images, crop=(crop, crop), crop_pos_y=vy, crop_pos_x=vx, mirror=m, **layout)
            for vy, vx, m in views]
    return (fn.stack(*outs) if len(outs) > 1 else outs[0]), shapes


@pipeline_def(batch_size=1, num_threads=1)
def _probe_pipeline(root, rel, device):
    jpegs, _ = fn.readers.file(file_root=root, files=[rel], labels=[0])
    return fn.decoders.image(jpegs, device=device, output_type=types.RGB)


class DaliLoader(Loader):
    backend = "dali"
    checks_jpeg_headers = True

    def __init__(self, *args, decoder: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.decoder = decoder  # "cpu" or "mixed"
        self.gpu = decoder == "mixed"
        self.found: dict[int, str] = {}   # manifest index -> reason: bad images found after the start-up check
        self.by_pillow: set[int] = set()  # good images DALI cannot decode
        # DALI is given only plain JPEGs of the right size; anything else is Pillow's to judge.
        for i in sorted(self.not_plain_jpeg):
            try:
                read_image(self.dataset.root / self.files[i], self.stored)
                self.by_pillow.add(i)
            except ImageProblem as e:
                self.found[i] = str(e)

    def _batches(self, plan: EpochPlan, start: int):
        b = start
        while b < len(plan):
            b = yield from self._run(plan, b)

    def _run(self, plan: EpochPlan, start: int):
        """Batches from `start` on, from one pipeline; returns where the next pipeline starts
        (the end of the plan, or a batch DALI failed on, after checking its files)."""
        skip = {**self.excluded, **self.found}
        sched = []  # per batch: (b, rows for DALI, rows for Pillow, bad (row, reason))
        for b in range(start, len(plan)):
            rows, bad = split_rows(plan, b, skip)
            pillow = np.zeros(0, np.int64)
            if self.by_pillow:
                mine = np.isin(plan.index[rows], list(self.by_pillow))
                rows, pillow = rows[~mine], rows[mine]
            sched.append((b, rows, pillow, bad))
        pipe = self._build(plan, [rows for _, rows, _, _ in sched if len(rows)])
        try:
            for b, rows, pillow, bad in sched:
                pixels = None
                if len(rows):
                    try:
                        out, shapes = pipe.run()
                    except RuntimeError as e:  # DALI's error for a file it cannot decode
                        self._diagnose(plan, b, rows, e)
                        return b
                    pixels, rows, bad = self._take(out, shapes, plan, rows, bad)
                yield self._assemble(plan, b, pixels, rows, pillow, bad)
        finally:
            del pipe
        return len(plan)

    def _build(self, plan: EpochPlan, work: list[np.ndarray]):
        """The pipeline over `work` (the DALI rows of each batch), every batch padded to the
        batch size with copies of its first image."""
        if not work:
            return None
        bs, span = self.batch_size, self.stored - self.crop
        padded = [np.concatenate([rows, np.full(bs - len(rows), rows[0])]) for rows in work]
        order = np.concatenate(padded)
        y, x = _normalised(plan.crop_y[order], span), _normalised(plan.crop_x[order], span)
        flip = plan.mirror[order].astype(np.int32)

        def params(i: int):
            # DALI prefetches past the last batch; those iterations are never read.
            take = np.arange(i * bs, (i + 1) * bs) % len(order)
            return y[take], x[take], flip[take]

        views = None if self.views is None else [(float(_normalised(vy, span)), float(_normalised(vx, span)), int(m))
                                                 for vy, vx, m in self.views]
        d = self.cfg.data
        pipe = _pipeline(batch_size=bs, num_threads=max(1, d.workers), prefetch_queue_depth=d.prefetch,
                         files=[self.files[i] for i in plan.index[order]], root=str(self.dataset.root), crop=self.crop,
                         device=self.decoder, hw_decoder_load=d.hw_decoder_load, views=views, params=params,
                         device_id=self.placement.a.index or 0 if self.gpu else None)
        pipe.build()
        return pipe

    def _take(self, out, shapes, plan: EpochPlan, rows: np.ndarray, bad: list):
        """The batch's crops cut off the padding, less the images of the wrong size: a numpy
        view of DALI's buffer (valid until the next run) or a new tensor on column A's GPU."""
        k, side = len(rows), self.stored
        hw = np.asarray(shapes.as_tensor())[:k]
        right = (hw[:, 0] == side) & (hw[:, 1] == side)
        for r, (h, w, _) in zip(rows[~right], hw[~right]):
            reason = f"is {w}x{h}, not the dataset's {side}x{side}"
            self.found[int(plan.index[r])] = reason
            bad.append((int(r), reason))
        t = out.as_tensor()
        if self.gpu:
            full = torch.empty(t.shape(), dtype=torch.uint8, device=self.placement.a)
            feed_ndarray(t, full, cuda_stream=torch.cuda.current_stream(self.placement.a))
            pixels = full[:k][torch.from_numpy(right).to(full.device)] if not right.all() else full[:k]
        else:
            pixels = np.asarray(t)[:k]
            if not right.all():
                pixels = pixels[right]
        return pixels, rows[right], sorted(bad)

    def _assemble(self, plan: EpochPlan, b: int, pixels, rows: np.ndarray, pillow: np.ndarray, bad: list) -> RawBatch:
        """The batch in plan order: DALI's crops, and those of the images Pillow decodes."""
        shape = (3, self.crop, self.crop) if self.views is None or len(self.views) == 1 else \
            (len(self.views), 3, self.crop, self.crop)
        if not len(pillow):
            if pixels is None:
                pixels = np.empty((0,) + shape, np.uint8)
            return RawBatch(b, rows, pixels, sorted(bad))
        extra, good = [], []
        for r in pillow:
            try:
                img = read_image(self.dataset.root / self.files[plan.index[r]], self.stored)
            except ImageProblem as e:  # broken since DALI refused it
                bad.append((int(r), str(e)))
                continue
            crop = np.empty(shape, np.uint8)
            views = self.views or [(plan.crop_y[r], plan.crop_x[r], plan.mirror[r])]
            for v, (y, x, m) in enumerate(views):
                cut(img, y, x, m, self.crop, crop if len(shape) == 3 else crop[v])
            extra.append(crop)
            good.append(r)
        all_rows = np.concatenate([rows, np.array(good, np.int64)])
        order = np.argsort(all_rows, kind="stable")
        host = np.stack(extra) if extra else np.empty((0,) + shape, np.uint8)
        if pixels is None:
            merged = host
        elif isinstance(pixels, torch.Tensor):
            self.feeder.bytes["A"] += host.nbytes  # the Pillow crops' copy to column A's GPU
            merged = torch.cat([pixels, torch.from_numpy(host).to(pixels.device)])[torch.from_numpy(order).to(pixels.device)]
        else:
            merged = np.concatenate([pixels, host])[order]
        return RawBatch(b, all_rows[order], merged, sorted(bad))

    def _diagnose(self, plan: EpochPlan, b: int, rows: np.ndarray, error: Exception) -> None:
        """After DALI failed on batch b: find its bad files (bad.read_image's verdict), or else
        the files only DALI cannot decode (left to Pillow). Neither: a DataError."""
        found = {}
        for r in rows:
            i = int(plan.index[r])
            try:
                read_image(self.dataset.root / self.files[i], self.stored)
            except ImageProblem as e:
                found[i] = str(e)
        if found:
            self.found.update(found)
            return
        refused = {int(plan.index[r]) for r in rows if self._refuses(self.files[int(plan.index[r])])}
        if not refused:
            first = next((l for l in str(error).splitlines() if l.strip()), type(error).__name__)
            raise DataError(f"DALI failed on batch {b + 1} of {self.split} ({self.decoder} decoder) and no "
                            f"file of it is bad: {one_line(first)}; try data.loader=torch")
        self.by_pillow |= refused

    def _refuses(self, rel: str) -> bool:
        """Whether DALI's decoder fails on this one file."""
        pipe = _probe_pipeline(root=str(self.dataset.root), rel=rel, device=self.decoder,
                               device_id=self.placement.a.index or 0 if self.gpu else None)
        try:
            pipe.build()
            pipe.run()
            return False
        except RuntimeError:
            return True
        finally:
            del pipe
