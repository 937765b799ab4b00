"""Run under torchrun by test_distributed.py: N float64 steps of the tiny two-column net with
DDP over CPU-simulated pairs, each rank on its slice of a fixed global batch."""
import sys

import torch
import torch.nn.functional as F

from twocol import sim
from twocol.config import load_config
from twocol.distributed import init, placement_for, shutdown, world_from_env, wrap
from twocol.model import build_model
from twocol.optim import make_optimizer



def batches(steps, global_batch):
    gen = torch.Generator().manual_seed(7)
    return [(torch.randn(global_batch, 3, 40, 40, dtype=torch.float64, generator=gen),
             torch.randint(0, 4, (global_batch,), generator=gen)) for _ in range(steps)]


def train(steps, global_batch, world):
    cfg = load_config("configs/tiny_twocol.yaml", ["model.num_classes=4", "model.dropout=0"])
    placement = placement_for(world, "cpu")
    init(world, placement)
    net = build_model(cfg, placement, seed=0).double()
    model = wrap(net, world)
    opt = make_optimizer(net, cfg.optim)
    per_rank = global_batch // world.size
    with sim.ColumnIsolation():
        for i, (x, y) in enumerate(batches(steps, global_batch)):
            part = slice(world.rank * per_rank, (world.rank + 1) * per_rank)
            loss = F.cross_entropy(model(x[part]), y[part])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i == 1:
                opt.set_base_lr(cfg.optim.lr / 10)  # the rule's momentum must carry across a rate change
    return net


if __name__ == "__main__":
    world = world_from_env()
    net = train(int(sys.argv[1]), int(sys.argv[2]), world)
    if world.is_main:
        torch.save(net.state_dict(), sys.argv[3])
    shutdown(world)
