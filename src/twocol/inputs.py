"""What a net takes: one input tensor per column, each already on its column's device.

The data pipeline puts the batch on every column's device itself (data/feed.py), so the model
never copies column A's input to column B: the only tensors that cross between the columns
are those of the named links. Each tensor is tagged with its column (sim.py), so with the
isolation checker on, a column that reads the other column's input fails.
"""
from __future__ import annotations

from typing import Callable

import torch

from . import sim
from .devices import Placement


class ColumnInputs:
    """The same batch for column A (`a`, on placement.a) and column B (`b`, on placement.b).
    Where both columns share a device, `b` is a view of `a`'s memory (no copy)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        if b is a:
            b = a.view_as(a)  # its own tensor object, so that it can carry B's tag
        self.a, self.b = sim.tag(a, "A"), sim.tag(b, "B")

    @classmethod
    def shared(cls, x: torch.Tensor) -> "ColumnInputs":
        """One tensor for both columns, when they run on its device."""
        return cls(x, x)

    @classmethod
    def copied(cls, x: torch.Tensor, placement: Placement) -> "ColumnInputs":
        """`x` put on each column's device by the caller (tests, benchmarks): a copy for a
        device x is not on, none for one it is on."""
        a = x.to(placement.a)
        return cls(a, a if placement.b == placement.a else x.to(placement.b))

    @property
    def shape(self) -> torch.Size:
        return self.a.shape

    def dim(self) -> int:
        return self.a.dim()

    def __len__(self) -> int:
        return len(self.a)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "ColumnInputs":
        """`fn` applied to each column's tensor (once where they share memory)."""
        a = fn(self.a)
        return ColumnInputs(a, a if self.b.data_ptr() == self.a.data_ptr() and self.b.device == self.a.device
                            else fn(self.b))

    def tensors(self) -> list[torch.Tensor]:
        return [self.a, self.b]


def column_inputs(x: torch.Tensor | ColumnInputs, placement: Placement) -> ColumnInputs:
    """A net's input as ColumnInputs: a plain tensor is taken only where both columns run on
    its device (then it is both columns' input); anything else must come per device."""
    if isinstance(x, ColumnInputs):
        for name, t, dev in (("A", x.a, placement.a), ("B", x.b, placement.b)):
            if t.device != dev:
                raise ValueError(f"column {name}'s input is on {t.device}, not on its device {dev}")
        return x
    if placement.a == placement.b == x.device:
        return ColumnInputs.shared(x)
    raise ValueError(f"a single tensor on {x.device} cannot feed columns on {placement.a} and {placement.b}: "
                     "give ColumnInputs with one tensor per column device (ColumnInputs.copied for a test)")
