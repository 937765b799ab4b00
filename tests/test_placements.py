import torch
import torch.nn.functional as F

from conftest import config
from twocol.devices import Placement
from twocol.model import build_model
from twocol.reference import GroupedNet
from twocol.optim import make_optimizer


def test_cpu_mode_and_grouped_reference_train_the_same_losses():
    """The same recipe on every placement: the two-column net and its grouped single-device
    equivalent take the same steps (float64; dropout off, since the two draw their masks in
    different shapes)."""
    cfg = config("small_twocol", "model.dropout=0")
    net = build_model(cfg, Placement.cpu(), seed=0).double()
    ref = GroupedNet(cfg.model, torch.device("cpu")).double().copy_from(net)
    opts = [make_optimizer(m, cfg.optim) for m in (net, ref)]
    gen = torch.Generator().manual_seed(1)
    for step in range(4):
        x = torch.randn(8, 3, 64, 64, dtype=torch.float64, generator=gen) * 2
        y = torch.randint(0, 10, (8,), generator=gen)
        losses = []
        for m, opt in zip((net, ref), opts):
            loss = F.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert abs(losses[0] - losses[1]) < 1e-10, (step, losses)
        if step == 1:
            for opt in opts:
                opt.set_base_lr(0.001)
