import numpy as np
import pytest
import torch

from conftest import config
from twocol.config import OptimConfig, ScheduleConfig
from twocol.devices import Placement
from twocol.model import build_model
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


def rates(opt):
    """{(layer or 'rest', kind): lr} of every parameter group."""
    return {(g["layer"] or "rest", g["kind"]): g["lr"] for g in opt.param_groups}


def test_2012_recipe_biases_stay_at_epsb_and_conv1_is_cut_then_frozen():
    cfg = config("alexnet_2012code", "model.input_size=67", "model.conv1.stride=2", "model.conv_widths=[4,8,8,8,6]",
                 "model.fc_widths=[16,16]", "model.num_classes=7", "data.image_size=72")
    net = build_model(cfg, Placement.cpu(), seed=0)
    opt = make_optimizer(net, cfg.optim, own_groups={s.layer for s in cfg.schedule.layer_steps})
    sched = LRSchedule(opt, cfg.schedule, cfg.optim.lr)
    seen = {0: rates(opt)}
    for epoch in range(1, 91):
        sched.step(epoch)
        seen[epoch] = rates(opt)
    # layer-params-145.cfg: epsW 0.01 -> 1e-3 (epoch 25) -> 1e-4 (51) -> 1e-5 (79); conv1 1e-5 at 67, 0 at 72;
    # epsB 0.02 throughout (0 on conv1 from 72).
    expect = {0: (0.01, 0.01, 0.02), 25: (1e-3, 1e-3, 0.02), 51: (1e-4, 1e-4, 0.02), 66: (1e-4, 1e-4, 0.02),
              67: (1e-4, 1e-5, 0.02), 71: (1e-4, 1e-5, 0.02), 72: (1e-4, 0.0, 0.0), 79: (1e-5, 0.0, 0.0), 90: (1e-5, 0.0, 0.0)}
    for epoch, (rest_w, conv1_w, conv1_b) in expect.items():
        r = seen[epoch]
        assert r[("rest", "weight")] == pytest.approx(rest_w) and r[("rest", "bias")] == pytest.approx(0.02), epoch
        assert r[("conv1", "weight")] == pytest.approx(conv1_w) and r[("conv1", "bias")] == pytest.approx(conv1_b), epoch
    assert seen[24][("rest", "weight")] == pytest.approx(0.01)
    decay = {(g["layer"] or "rest", g["kind"]): g["weight_decay"] for g in opt.param_groups}
    assert decay == {("rest", "weight"): 0.0005, ("rest", "bias"): 0.0, ("conv1", "weight"): 0.0005, ("conv1", "bias"): 0.0}
    # Both columns' conv1 and nothing else in conv1's groups.
    conv1 = {id(p) for c in (net.col_a, net.col_b) for p in c.conv1.parameters()}
    assert {id(p) for g in opt.param_groups if g["layer"] == "conv1" for p in g["params"]} == conv1

    # A resumed run is where it was: conv1 still frozen.
    other = make_optimizer(net, cfg.optim, own_groups={"conv1"})
    again = LRSchedule(other, cfg.schedule, cfg.optim.lr)
    other.load_state_dict(opt.state_dict())
    again.load_state_dict(sched.state_dict())
    assert rates(other) == rates(opt)


def test_a_frozen_group_does_not_move_and_a_bias_without_decay_does_not_shrink():
    w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = PaperSGD([{"params": [w], "lr": 0.1, "weight_decay": 0.0005}, {"params": [b], "lr": 0.1, "weight_decay": 0.0}],
                   lr=0.1)
    for lr in (0.1, 0.0, 0.0):  # a step that builds velocity, then frozen: the velocity must not be applied
        opt.param_groups[0]["lr"] = lr
        w.grad, b.grad = torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
        before = w.detach().clone()
        opt.step()
        if lr == 0:
            assert torch.equal(w.detach(), before)
    assert torch.equal(b.detach(), torch.ones(3, dtype=torch.float64))  # zero gradient, no decay: unchanged
    assert torch.allclose(w.detach(), torch.full((3,), 1 - 0.1 - 0.0005 * 0.1, dtype=torch.float64))


def first_cut(errors, cfg: ScheduleConfig):
    sched = LRSchedule(make_optimizer(torch.nn.Linear(2, 2), OptimConfig(lr=0.01)), cfg, 0.01)
    return next((e + 1 for e, err in enumerate(errors) if sched.step(e + 1, err)), None)


def noisy(true_errors, seed, images=1000):
    """Validation errors measured on `images` images: binomial noise around the true error."""
    rng = np.random.default_rng(seed)
    return list(rng.binomial(images, np.asarray(true_errors)) / images)


def test_small_configs_plateau_rule_does_not_cut_on_noise_but_cuts_a_real_plateau():
    robust = config("small_twocol").schedule
    literal = ScheduleConfig(kind="plateau", patience=3, max_drops=3)  # the rule the small configs had
    t = np.arange(1, 61)
    falling = 0.12 + 0.6 * np.exp(-t / 12)  # still gaining 1 point an epoch at epoch 20, 0.3 at 35
    literal_cuts = [first_cut(noisy(falling, s), literal) for s in range(20)]
    robust_cuts = [first_cut(noisy(falling, s), robust) for s in range(20)]
    assert sum(c < 25 for c in literal_cuts) >= 4, literal_cuts  # 7+ points still to gain
    assert all(c is None or c >= 30 for c in robust_cuts), robust_cuts
    # 40 epochs falling by 1 point an epoch to 20%, then flat: the literal rule cuts on the way
    # down in most draws; the robust one only on the plateau, within 16 epochs of its start.
    plateau = np.concatenate([np.linspace(0.6, 0.2, 40), np.full(20, 0.2)])
    assert sum(first_cut(noisy(plateau, s), literal) <= 40 for s in range(20)) >= 10
    cuts = [first_cut(noisy(plateau, s), robust) for s in range(20)]
    assert all(c is not None and 40 < c <= 56 for c in cuts), cuts


def test_end_on_plateau_stops_where_a_fourth_cut_would_come_and_survives_a_round_trip():
    cfg = ScheduleConfig(kind="plateau", patience=2, max_drops=3, end_on_plateau=True)
    opt = make_optimizer(torch.nn.Linear(2, 2), OptimConfig(lr=0.01))
    sched = LRSchedule(opt, cfg, 0.01)
    # Improves at epochs 1-2, then flat: cuts after epochs 4, 6 and 8; at 10 a fourth would come.
    errors = [0.9, 0.8] + [0.8] * 8
    history = []
    for epoch, e in enumerate(errors, 1):
        sched.step(epoch, e)
        history.append((sched.drops, sched.done))
        if epoch == 9:
            saved = sched.state_dict()
    assert history == [(0, False)] * 3 + [(1, False)] * 2 + [(2, False)] * 2 + [(3, False)] * 2 + [(3, True)]
    again = LRSchedule(make_optimizer(torch.nn.Linear(2, 2), OptimConfig(lr=0.01)), cfg, 0.01)
    again.load_state_dict(saved)
    again.step(10, 0.8)
    assert again.done and again.drops == 3 and again.lr == pytest.approx(1e-5)
    # Without the key the run goes on to train.epochs at the last rate.
    plain = LRSchedule(make_optimizer(torch.nn.Linear(2, 2), OptimConfig(lr=0.01)),
                       ScheduleConfig(kind="plateau", patience=2, max_drops=3), 0.01)
    for epoch, e in enumerate(errors, 1):
        plain.step(epoch, e)
    assert plain.drops == 3 and plain.done  # the schedule knows; only end_on_plateau ends the run


def test_end_on_plateau_needs_the_plateau_rule():
    from twocol.errors import ConfigError
    with pytest.raises(ConfigError, match="schedule.end_on_plateau needs schedule.kind=plateau"):
        config("tiny_twocol", "schedule.end_on_plateau=true")
