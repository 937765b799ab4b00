"""The fallback loader: Pillow decodes, numpy cuts the crops, torch DataLoader workers run it
in parallel. Each worker builds whole batches, so one array per batch crosses from a worker to
the main process: the normalised float32 batch when every column runs on the host (the CPU
simulation), else the uint8 crops, pinned by the DataLoader, which the Feeder copies to each
GPU without blocking and normalises there."""
from __future__ import annotations

import contextlib
import signal

import numpy as np
import torch

from .bad import ImageProblem, read_image
from .base import Loader, RawBatch, split_rows
from .plan import EpochPlan


def cut(pixels: np.ndarray, y: int, x: int, mirror: bool, crop: int, out: np.ndarray) -> None:
    """The (3, crop, crop) crop of an (S, S, 3) image at (y, x), mirrored or not, into `out`."""
    win = pixels[y:y + crop, x:x + crop].transpose(2, 0, 1)
    out[...] = win[..., ::-1] if mirror else win


class _Batches(torch.utils.data.Dataset):
    def __init__(self, loader: "TorchLoader", plan: EpochPlan, start: int):
        # Only plain data (and, for the host, the host's mean image): workers get a copy.
        self.plan, self.start, self.views, self.excluded = plan, start, loader.views, loader.excluded
        self.root, self.files, self.size, self.crop = loader.dataset.root, loader.files, loader.stored, loader.crop
        self.feeder = loader.feeder if loader.feeder.host_only else None

    def __len__(self) -> int:
        return len(self.plan) - self.start

    def __getitem__(self, b: int) -> RawBatch:
        p = self.plan
        b += self.start
        rows, bad = split_rows(p, b, self.excluded)
        images, good = [], []
        for r in rows:
            try:
                images.append(read_image(self.root / self.files[p.index[r]], self.size))
                good.append(r)
            except ImageProblem as e:
                bad.append((int(r), str(e)))
        rows = np.array(good, np.int64)
        views = self.views or [None]
        pixels = np.empty((len(rows), len(views), 3, self.crop, self.crop), np.uint8)
        for i, (r, img) in enumerate(zip(rows, images)):
            for v, view in enumerate(views):
                y, x, m = view if view is not None else (p.crop_y[r], p.crop_x[r], p.mirror[r])
                cut(img, y, x, m, self.crop, pixels[i, v])
        if self.views is None or len(self.views) == 1:
            pixels = pixels[:, 0]
        bad.sort()
        if self.feeder is not None:
            return RawBatch(b, rows, torch.from_numpy(self.feeder.host_normalise(pixels, p, rows, self.views)), bad, True)
        return RawBatch(b, rows, torch.from_numpy(pixels), bad)


# Signals are the main process's: it stops at a step boundary (or at once) and ends its workers.
# A worker that took the Ctrl-C sent to the whole process group would print a traceback and die,
# and its death would fail the main process's next wait for a batch.
_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def _signals_held():
    """Workers forked inside start with SIGINT and SIGTERM blocked (a fork keeps the forking
    thread's mask) until `_start_worker` ignores them: none reaches a worker on its way there,
    when it would still run the main process's handler. Those that reach the main process
    meanwhile wait, and are handled after."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _start_worker(_worker_id: int) -> None:
    for s in _SIGNALS:
        signal.signal(s, signal.SIG_IGN)  # a signal pending since the fork is dropped
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    # Workers are processes already: threads inside them would only fight over the cores.
    torch.set_num_threads(1)


def _collate(raw: RawBatch) -> RawBatch:
    return raw


class TorchLoader(Loader):
    backend = "torch"

    def _batches(self, plan: EpochPlan, start: int):
        workers, prefetch = self.cfg.data.workers, self.cfg.data.prefetch
        # Pinned (RawBatch.pin_memory) by the DataLoader's pinning thread, ahead of use. Each
        # iteration draws its workers' base seed from `generator`: from torch's global one by
        # default, which would shift the dropout masks of every later step, and differently in
        # a run resumed mid-epoch (nothing here is random: the plan holds every parameter).
        batches = torch.utils.data.DataLoader(
            _Batches(self, plan, start), batch_size=None, shuffle=False, num_workers=workers,
            collate_fn=_collate, pin_memory=self.feeder.pin, worker_init_fn=_start_worker if workers else None,
            prefetch_factor=prefetch if workers else None, generator=torch.Generator().manual_seed(self.seed))
        with _signals_held():  # the workers are forked here
            batches = iter(batches)
        yield from batches
