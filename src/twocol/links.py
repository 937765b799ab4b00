"""Where the columns run and how they meet: each column's runtime (its device and, on CUDA,
its own stream) and the cross-column links, the only places where a tensor moves from one
column to the other.

A link copies a tensor to the other column's device, counts the bytes it moved in the forward
pass and in the backward pass (the gradient going home), per direction too, and, on CUDA,
orders the copy after the source column's stream and before the destination column's.

While torch's profiler runs, each column's work is recorded under "twocol:column:<name>" and
each link copy under "twocol:link:<name>:<src>><dst>", so that a trace (twocol profile) can put
every op in its column's lane; outside a profile nothing is recorded.
"""
from __future__ import annotations

import contextlib

import torch
from torch.autograd.profiler import record_function

from . import sim

COLUMN_LABEL = "twocol:column:"
LINK_LABEL = "twocol:link:"


def profiled(label: str):
    """A profiler range named `label` while torch's profiler runs; nothing otherwise (the
    check is one call, so training pays nothing for it)."""
    return record_function(label) if torch.autograd._profiler_enabled() else contextlib.nullcontext()


class _Crossing(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, device, link):
        ctx.src_device, ctx.link = x.device, link
        link.bytes_forward += x.numel() * x.element_size()
        if x.device == device:
            # Same physical device (CPU mode, --gpus 0): a view is all the "copy" needs,
            # but it is a new tensor, so it can carry the destination column's tag.
            return x.view_as(x)
        return x.to(device, non_blocking=True)

    @staticmethod
    def backward(ctx, grad):
        ctx.link.bytes_backward += grad.numel() * grad.element_size()
        if grad.device == ctx.src_device:
            return grad, None, None
        return grad.to(ctx.src_device, non_blocking=True), None, None


class Link:
    """A named cross-column link, counting the bytes that cross it in each direction of autograd."""

    def __init__(self, name: str):
        self.name = name
        self.bytes_forward = 0
        self.bytes_backward = 0
        # Forward bytes per direction, "A>B": what the cost model needs; the gradient of each
        # send goes the other way with as many bytes.
        self.bytes_by_route: dict[str, int] = {}

    def reset(self) -> None:
        self.bytes_forward = self.bytes_backward = 0
        self.bytes_by_route = {}

    def send(self, x: torch.Tensor, src: "ColumnRuntime", dst: "ColumnRuntime") -> torch.Tensor:
        """Move `x` (produced by column `src`) to column `dst`."""
        route = f"{src.name}>{dst.name}"
        with sim.in_column(None), profiled(f"{LINK_LABEL}{self.name}:{route}"):
            self.bytes_by_route[route] = self.bytes_by_route.get(route, 0) + x.numel() * x.element_size()
            if dst.stream is not None:
                dst.stream.wait_stream(src.stream)
                # A copy between GPUs syncs with the current stream of both devices: make
                # those the two columns' streams (on one GPU the second one wins).
                with torch.cuda.stream(src.stream), torch.cuda.stream(dst.stream):
                    out = _Crossing.apply(x, dst.device, self)
                # The source tensor is read on the destination's stream: keep its memory alive.
                x.record_stream(dst.stream)
            else:
                out = _Crossing.apply(x, dst.device, self)
        return sim.tag(out, dst.name)

    def __repr__(self) -> str:
        return f"Link({self.name}: {self.bytes_forward} B forward, {self.bytes_backward} B backward)"


class ColumnRuntime:
    """Where one column runs: its name, device and (on CUDA, when enabled) its own stream."""

    def __init__(self, name: str, device: torch.device):
        self.name, self.device, self.stream = name, device, None

    def use_stream(self, enabled: bool) -> None:
        """Run the column on a stream of its own (CUDA only), so that two columns on one GPU
        can overlap; off, it runs on the caller's stream."""
        self.stream = torch.cuda.Stream(self.device) if enabled and self.device.type == "cuda" else None

    def __enter__(self):
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(profiled(COLUMN_LABEL + self.name))
        self._stack.enter_context(sim.in_column(self.name))
        if self.stream is not None:
            self._stack.enter_context(torch.cuda.stream(self.stream))
        return self

    def __exit__(self, *exc):
        return self._stack.__exit__(*exc)


@contextlib.contextmanager
def streams_follow_caller(columns, inputs: list[torch.Tensor]):
    """Around a forward pass: column streams start after whatever the caller queued (the
    inputs) and the caller's stream resumes after every column finishes. Tensors crossing
    between the caller's stream and a column's are recorded on the stream that reads them, so
    the caching allocator does not hand their memory out while that stream may still read it.
    Yields `handed_back(out)`, to call on the tensor returned to the caller."""
    runs = [r for r in columns if r.stream is not None]
    caller = {r.device: torch.cuda.current_stream(r.device) for r in runs}
    for r in runs:
        r.stream.wait_stream(caller[r.device])
        for x in inputs:
            if x.device == r.device:
                x.record_stream(r.stream)

    def handed_back(out):
        if runs:
            out.record_stream(caller[out.device])
        return out

    yield handed_back
    for r in runs:
        caller[r.device].wait_stream(r.stream)
