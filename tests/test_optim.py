import pytest
import torch

from twocol.config import OptimConfig, ScheduleConfig
from twocol.optim import LRSchedule, PaperSGD, make_optimizer


def test_paper_update_matches_hand_written_rule_across_a_rate_change():
    torch.manual_seed(0)
    w = torch.randn(5, dtype=torch.float64, requires_grad=True)
    opt = PaperSGD([w], lr=0.1, momentum=0.9, weight_decay=0.0005)
    ref_w, ref_v = w.detach().clone(), torch.zeros(5, dtype=torch.float64)
    sgd_w = w.detach().clone().requires_grad_()
    sgd = torch.optim.SGD([sgd_w], lr=0.1, momentum=0.9, weight_decay=0.0005)
    for step, lr in enumerate([0.1, 0.1, 0.01, 0.01, 0.001]):
        opt.param_groups[0]["lr"] = lr
        sgd.param_groups[0]["lr"] = lr
        grad = torch.randn(5, dtype=torch.float64)
        w.grad, sgd_w.grad = grad.clone(), grad.clone()
        opt.step()
        sgd.step()
        ref_v = 0.9 * ref_v - 0.0005 * lr * ref_w - lr * grad
        ref_w = ref_w + ref_v
        torch.testing.assert_close(w.detach(), ref_w, rtol=1e-14, atol=1e-15)
    # The rule is not torch.optim.SGD's once the rate has changed.
    assert not torch.allclose(w.detach(), sgd_w.detach(), rtol=1e-6, atol=1e-8)


def test_bias_rate_multiplier_and_schedule_drops():
    model = torch.nn.Linear(3, 2)
    opt = make_optimizer(model, OptimConfig(lr=0.01, bias_lr_mult=2.0))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.02])
    sched = LRSchedule(opt, ScheduleConfig(kind="plateau", patience=2, max_drops=3), 0.01)
    errors = [0.9, 0.8, 0.8, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]
    dropped = [sched.step(e + 1, err) for e, err in enumerate(errors)]
    assert [i + 1 for i, d in enumerate(dropped) if d] == [4, 7, 9]  # at most 3 drops
    assert sched.lr == pytest.approx(1e-5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-5, 2e-5])


def test_fixed_schedule_and_state_round_trip():
    model = torch.nn.Linear(3, 2)
    opt = make_optimizer(model, OptimConfig(lr=0.01))
    sched = LRSchedule(opt, ScheduleConfig(kind="fixed", milestones=[2, 4]), 0.01)
    lrs = []
    for epoch in range(1, 6):
        sched.step(epoch)
        lrs.append(sched.lr)
    assert lrs == pytest.approx([0.01, 0.001, 0.001, 0.0001, 0.0001])
    other = LRSchedule(make_optimizer(model, OptimConfig(lr=0.01)), ScheduleConfig(kind="fixed", milestones=[2, 4]), 0.01)
    other.load_state_dict(sched.state_dict())
    assert other.lr == sched.lr and other.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_updates_parameters_on_their_own_devices():
    a = torch.nn.Parameter(torch.ones(2))
    a.grad = torch.ones(2)
    PaperSGD([a], lr=0.5, momentum=0.0, weight_decay=0.0).step()
    assert torch.equal(a.detach(), torch.full((2,), 0.5))


def test_foreach_update_is_the_same_arithmetic_in_fewer_ops(monkeypatch):
    """optim.foreach=true: every weight bit for bit as the per-tensor loop, over steps with a
    rate change, on a net with float32 and float64 tensors (two groups of foreach ops)."""
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2).double()) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [make_optimizer(n, OptimConfig(lr=0.1, bias_lr_mult=2.0, foreach=f)) for n, f in zip(nets, (False, True))]
    calls = []
    real = torch._foreach_add_
    monkeypatch.setattr(torch, "_foreach_add_", lambda *a, **k: calls.append(len(a[0])) or real(*a, **k))
    for step in range(4):
        x = torch.randn(5, 4)
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            net[1](net[0](x).double()).square().sum().backward()
            if step == 2:
                opt.set_base_lr(0.01)
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.equal(a, b)
    # Per step: 2 groups (weights, biases) x 2 dtypes x 3 foreach adds, each over one tensor.
    assert calls == [1] * (4 * 2 * 2 * 3)
