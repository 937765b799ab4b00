"""Data parallelism over model-parallel pairs (torchrun): each process trains one two-column
net on its own pair of devices, and gradients are averaged across processes by DDP.

Batch semantics: `data.batch_size` is per process; the global batch is batch_size x processes,
and the learning rate applies to the gradient averaged over that global batch (as one
process with the global batch would). Run with
    torchrun --nproc-per-node=P -m twocol train --gpus 0,1,2,3 ...
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .devices import Placement
from .errors import PlacementError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """The process's place in a torchrun job (a one-process world outside torchrun)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))


def placement_for(world: World, spec: str | None) -> Placement:
    """This process's pair: ids 2r and 2r+1 of `spec` (default: the node's GPUs 0..), both
    columns on one GPU where a single id is left, or the CPU simulation for 'cpu'."""
    if not world.active:
        return Placement.parse(spec)
    if spec is None:
        spec = "cpu" if not torch.cuda.is_available() else ",".join(str(i) for i in range(torch.cuda.device_count()))
    if spec.strip().lower() in ("cpu", "sim"):
        return Placement.cpu()
    ids = [p.strip() for p in spec.split(",")]
    pair = ids[2 * world.local_rank: 2 * world.local_rank + 2]
    if not pair:
        raise PlacementError(f"--gpus '{spec}' has no pair for local rank {world.local_rank}: give 2 GPU ids "
                             f"per process ({2 * (world.local_rank + 1)} or more ids on this node)")
    return Placement.parse(",".join(pair))


def init(world: World, placement: Placement) -> None:
    if world.active and not dist.is_initialized():
        backend = "nccl" if placement.a.type == "cuda" else "gloo"
        if placement.a.type == "cuda":
            torch.cuda.set_device(placement.a)
        dist.init_process_group(backend)


def wrap(net: torch.nn.Module, world: World) -> torch.nn.Module:
    """DDP over a module that spans two devices (device_ids must then be None)."""
    if not world.active:
        return net
    return DistributedDataParallel(net, device_ids=None, broadcast_buffers=False)


def all_sum(values: list[float], device: torch.device, world: World) -> list[float]:
    if not world.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj, world: World) -> list:
    if not world.active:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


def shutdown(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()
