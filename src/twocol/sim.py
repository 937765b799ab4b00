"""Column isolation: the CPU simulation's proof that the two columns only meet at the links.

Every tensor an op produces while a column runs is tagged with that column; parameters are
tagged with the column that owns them. With `ColumnIsolation` active, an op running in column
X that receives a tensor tagged with column Y raises IsolationError. Links run outside any
column and tag what they deliver with the destination column, so they are the only way across.

Only the forward pass is checked: autograd's backward graph mirrors the forward one, so a
gradient can only cross where a forward tensor crossed, i.e. at a link.
"""
from __future__ import annotations

import contextlib
import threading

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

_TAG = "_twocol_column"
_local = threading.local()


class IsolationError(RuntimeError):
    """A tensor from one column reached the other column other than through a named link."""


def current_column() -> str | None:
    return getattr(_local, "column", None)


@contextlib.contextmanager
def in_column(name: str | None):
    """Run the body as column `name` (None: outside every column, as the links do)."""
    previous = current_column()
    _local.column = name
    try:
        yield
    finally:
        _local.column = previous


def tag(t: torch.Tensor, column: str) -> torch.Tensor:
    setattr(t, _TAG, column)
    return t


def column_of(t: torch.Tensor) -> str | None:
    return getattr(t, _TAG, None)


def tag_module(module: torch.nn.Module, column: str) -> None:
    for p in module.parameters():
        tag(p, column)
    for b in module.buffers():
        tag(b, column)


def isolation(enabled: bool):
    """The checker when asked for (--check-isolation), a no-op context otherwise."""
    return ColumnIsolation() if enabled else contextlib.nullcontext()


class ColumnIsolation(TorchFunctionMode):
    """Checks every torch call made while a column runs. Use as a context manager."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        column = current_column()
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if column is not None:
            for t in inputs:
                other = column_of(t)
                if other is not None and other != column:
                    name = getattr(func, "__name__", str(func))
                    raise IsolationError(
                        f"column {column} ran {name} on a tensor produced by column {other} "
                        f"without going through a named link")
        out = func(*args, **kwargs)
        if column is not None:
            # An op may hand back one of its inputs (e.g. .contiguous()); that keeps its own tag.
            seen = {id(t) for t in inputs}
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and id(t) not in seen:
                    tag(t, column)
        return out
