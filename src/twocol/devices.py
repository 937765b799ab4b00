"""Where each column lives: `--gpus 0,1` (one GPU each), `--gpus 0` (both on one GPU) or
`--gpus cpu` (the CPU simulation of two devices)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import PlacementError


@dataclass(frozen=True)
class Placement:
    """The devices of column A and column B. `simulated` marks the CPU mode, where both
    columns run on the CPU as if they were two devices."""

    a: torch.device
    b: torch.device
    simulated: bool = False

    @property
    def spec(self) -> str:
        if self.simulated:
            return "cpu"
        if self.a == self.b:
            return str(self.a.index)
        return f"{self.a.index},{self.b.index}"

    def __str__(self) -> str:
        if self.simulated:
            return "cpu (two simulated devices)"
        return f"column A on {self.a}, column B on {self.b}"

    @classmethod
    def cpu(cls) -> "Placement":
        return cls(torch.device("cpu"), torch.device("cpu"), simulated=True)

    @classmethod
    def default_spec(cls) -> str:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return "0,1" if n >= 2 else "0" if n == 1 else "cpu"

    @classmethod
    def parse(cls, spec: str | None) -> "Placement":
        """Parse a --gpus value; None means the default for this machine."""
        spec = cls.default_spec() if spec is None else spec.strip()
        if spec.lower() in ("cpu", "sim"):
            return cls.cpu()
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        exist = ", ".join(f"cuda:{i}" for i in range(n)) or "no CUDA devices, only the CPU"
        parts = [p.strip() for p in spec.split(",")]
        if not all(p.isascii() and p.isdigit() for p in parts):  # str.isdigit alone accepts '²'
            raise PlacementError(f"--gpus '{spec}' is not 'cpu' or a list of GPU ids like 0,1 (this machine has: {exist})")
        ids = [int(p) for p in parts]
        if len(ids) > 2:
            raise PlacementError(f"--gpus '{spec}' names {len(ids)} GPUs; one two-column net takes 1 or 2, "
                                 f"more need one process per pair (make train GPUS={spec}, or torchrun) "
                                 f"(this machine has: {exist})")
        if len(set(ids)) != len(ids):
            raise PlacementError(f"--gpus '{spec}' repeats a GPU id; give two different ids or one (this machine has: {exist})")
        missing = [i for i in ids if i >= n]
        if missing:
            raise PlacementError(f"--gpus '{spec}': GPU {missing[0]} does not exist (this machine has: {exist})")
        devs = [torch.device("cuda", i) for i in ids]
        return cls(devs[0], devs[-1])
