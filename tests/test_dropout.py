"""Dropout as the paper ran it (section 4.2; the 2012 code's dropout layer): kept outputs unscaled
in training, every output times keep = 1 - rate at test; and how the inverted form differs."""
import copy

import pytest
import torch
import torch.nn.functional as F

from conftest import config, twocol_in_process
from twocol.checkpoint import load_checkpoint, load_net
from twocol.checkpoint_checks import check_same_architecture, stored_config
from twocol.config import config_from_dict
from twocol.data.synth import synthesize
from twocol.devices import Placement
from twocol.errors import CheckpointError
from twocol.model import Dropout, build_model
from twocol.optim import make_optimizer

KEEP = 0.5


def tiny(convention, *overrides):
    return config("tiny_twocol", "model.dropout=0.5", f"model.dropout_convention={convention}", *overrides)


def by_hand(ref, x, masks):
    """The paper's net from pool5 on, written out: fc6 and fc7 of each column, ReLU, then each
    output times its 0/1 mask (training) or times KEEP (test: masks is None); fc8 on both fc7s.
    The conv layers are the copy's own (dropout plays no part there)."""
    a, b = ref.col_a, ref.col_b
    p2a, p2b = a.run(("conv1", "conv2"), x), b.run(("conv1", "conv2"), x)
    p5 = [c.run(("conv3", "conv4", "conv5"), torch.cat([p2a, p2b], 1)) for c in (a, b)]
    drop = (lambda h, i: h * masks[i]) if masks is not None else (lambda h, i: h * KEEP)
    h6 = [drop(torch.relu(F.linear(torch.cat(p5, 1), c.fc6.weight, c.fc6.bias)), i) for i, c in enumerate((a, b))]
    h7 = [drop(torch.relu(F.linear(torch.cat(h6, 1), c.fc7.weight, c.fc7.bias)), 2 + i) for i, c in enumerate((a, b))]
    return F.linear(torch.cat(h7, 1), ref.fc8.weight, ref.fc8.bias)


def test_a_training_step_and_an_evaluation_are_the_papers_rule_in_float64():
    cfg = tiny("paper")
    net = build_model(cfg, Placement.cpu(), seed=0).double()
    ref = copy.deepcopy(net)
    side, f6, f7 = cfg.model.input_size, *cfg.model.fc_widths
    x = torch.randn(6, 3, side, side, dtype=torch.float64)
    y = torch.randint(0, cfg.model.num_classes, (6,))

    net.train()
    torch.manual_seed(11)
    loss = F.cross_entropy(net(x), y)
    opt = make_optimizer(net, cfg.optim)
    loss.backward()
    opt.step()

    # The same generator draws, in the order the net makes them: fc6 of A, of B, fc7 of A, of B.
    torch.manual_seed(11)
    masks = [torch.bernoulli(torch.full((6, f), KEEP, dtype=torch.float64)) for f in (f6, f6, f7, f7)]
    assert all(0 < m.mean() < 1 for m in masks)
    ref_loss = F.cross_entropy(by_hand(ref, x, masks), y)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=0)
    ref_loss.backward()
    lr, wd = cfg.optim.lr, cfg.optim.weight_decay
    with torch.no_grad():  # the paper's update from a zero velocity: w - lr (wd w + grad)
        for p in ref.parameters():
            p.sub_(lr * (wd * p + p.grad))
    for (name, p), q in zip(net.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-15, msg=name)

    net.eval()
    x2 = torch.randn(4, 3, side, side, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(net(x2), by_hand(ref, x2, None), rtol=1e-12, atol=1e-15)


def test_the_module_masks_unscaled_and_scales_at_test_and_inverted_is_that_over_keep():
    x = torch.rand(64, 300) + 0.5
    paper, inverted = Dropout(0.5, "paper"), Dropout(0.5, "inverted")
    torch.manual_seed(3)
    p = paper(x)
    torch.manual_seed(3)
    i = inverted(x)
    kept = p != 0
    assert torch.equal(p[kept], x[kept]) and 0.4 < kept.float().mean() < 0.6
    torch.testing.assert_close(i, p / KEEP, rtol=0, atol=0)  # the same mask, kept outputs doubled
    paper.eval(), inverted.eval()
    assert torch.equal(paper(x), x * KEEP) and torch.equal(inverted(x), x)
    assert Dropout(0.0, "paper")(x) is x


def test_inverted_is_the_papers_net_with_fc7_and_fc8_at_twice_the_weights_and_4x_the_gradient_step():
    """What the two conventions do to the same weights, in float64. At test each dropout layer's
    output differs by keep (fc6's, for the same input). The inverted net is the paper's net whose
    fc7 and fc8 weights (the layers that read a dropped output) are its own divided by keep (init
    std x 2), in training and at test; and one step of the paper's update moves those at 1 / keep^2
    = 4x the rate on the gradient term, the same on weight decay."""
    inv_cfg, paper_cfg = tiny("inverted"), tiny("paper")
    inv = build_model(inv_cfg, Placement.cpu(), seed=0).double()
    pap = build_model(paper_cfg, Placement.cpu(), seed=0).double()
    side = inv_cfg.model.input_size
    x = torch.randn(5, 3, side, side, dtype=torch.float64)
    y = torch.randint(0, 10, (5,))

    inv.eval(), pap.eval()
    pool5 = torch.rand(5, pap.col_a.fc6.in_features, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(pap.col_a.run(("fc6",), pool5), KEEP * inv.col_a.run(("fc6",), pool5), rtol=1e-12, atol=0)
        assert not torch.allclose(pap(x), inv(x))
        for layer in (pap.col_a.fc7, pap.col_b.fc7, pap.fc8):
            layer.weight.div_(KEEP)
        torch.testing.assert_close(pap(x), inv(x), rtol=1e-12, atol=1e-15)
    inv.train(), pap.train()
    steps = {}
    for name, net, cfg in (("inverted", inv, inv_cfg), ("paper", pap, paper_cfg)):
        before = {n: p.detach().clone() for n, p in net.named_parameters()}
        torch.manual_seed(5)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        make_optimizer(net, cfg.optim).step()
        steps[name] = (loss, before, dict(net.named_parameters()))
    torch.testing.assert_close(steps["inverted"][0], steps["paper"][0], rtol=1e-12, atol=0)
    lr, wd = paper_cfg.optim.lr, paper_cfg.optim.weight_decay
    (_, inv_before, inv_after), (_, pap_before, pap_after) = steps["inverted"], steps["paper"]
    for n in ("col_a.fc7.weight", "col_b.fc7.weight", "fc8.weight"):
        w0 = pap_before[n]
        grad = pap_after[n].grad
        four_x = w0 - lr * (wd * w0 + grad / KEEP ** 2)  # the paper's step, gradient term x 4
        torch.testing.assert_close(inv_after[n].detach() / KEEP, four_x, rtol=1e-10, atol=1e-14)
        assert not torch.allclose(pap_after[n].detach(), four_x)
    torch.testing.assert_close(inv_after["col_a.fc6.weight"].detach(), pap_after["col_a.fc6.weight"].detach(),
                               rtol=1e-10, atol=1e-14)


def checkpoint_file(tmp_path, cfg, drop_key):
    """A checkpoint as `twocol train` writes it, or as it wrote it before the convention was recorded."""
    stored = cfg.to_dict()
    if drop_key:
        del stored["model"]["dropout_convention"]
    path = tmp_path / ("old.pt" if drop_key else "new.pt")
    net = build_model(cfg, Placement.cpu(), seed=0)
    torch.save({"format": 1, "model": net.state_dict(), "config": stored}, path)
    return path


def test_a_checkpoint_from_before_the_key_loads_inverted_and_a_new_one_as_recorded(tmp_path):
    assert config("alexnet_paper").model.dropout_convention == "paper"
    assert config_from_dict({}).model.dropout_convention == "paper"
    cfg = tiny("paper")
    old, new = checkpoint_file(tmp_path, cfg, True), checkpoint_file(tmp_path, cfg, False)
    net, got, _ = load_net(old, Placement.cpu())
    assert got.model.dropout_convention == "inverted" and net.col_a.drop7.convention == "inverted"
    net, got, _ = load_net(new, Placement.cpu())
    assert got.model.dropout_convention == "paper" and net.col_b.drop6.convention == "paper"
    # The old net evaluated with a config that would scale fc6 and fc7 by 0.5 at test: refused.
    with pytest.raises(CheckpointError, match=r"multiplies fc6 and fc7 by 1 at test .*inverted.*by 0.5"):
        check_same_architecture(torch.load(old), cfg, old)
    check_same_architecture(torch.load(old), tiny("inverted"), old)
    # What `twocol train --resume` builds from it, with overrides on top
    resumed = config_from_dict(stored_config(torch.load(old)), "resume", ["train.epochs=2"])
    assert resumed.model.dropout_convention == "inverted" and resumed.train.epochs == 2
    check_same_architecture(torch.load(old), tiny("inverted", "model.dropout=0.3"), old)  # training rate only
    check_same_architecture(torch.load(new), cfg, new)
    with pytest.raises(CheckpointError, match=r"by 0.5 at test \(model.dropout 0.5, paper\), the config's by 1 \(0, paper"):
        check_same_architecture(torch.load(new), tiny("paper", "model.dropout=0"), new)


@pytest.mark.slow
def test_a_run_from_before_the_key_resumes_and_evaluates_as_it_was_trained(capsys, tmp_path):
    data = synthesize(tmp_path / "synth", classes=4, per_class=40, image_size=44, val_per_class=10, workers=1)
    run = tmp_path / "run"
    common = ["--gpus", "cpu", "--data", str(data)]
    code, _, err = twocol_in_process(capsys, "train", *common, "--run-dir", run, "-c", "configs/tiny_twocol.yaml",
                                     "model.num_classes=4", "model.dropout=0.5", "model.dropout_convention=inverted",
                                     "data.workers=0", "train.epochs=1")
    assert code == 0, err
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["config"]["model"]["dropout_convention"] == "inverted"  # recorded from now on
    del ckpt["config"]["model"]["dropout_convention"]  # as a checkpoint written before the key existed
    torch.save(ckpt, run / "checkpoint.pt")
    code, _, err = twocol_in_process(capsys, "train", "--resume", run / "checkpoint.pt", *common, "train.epochs=2")
    assert code == 0, err
    resumed = load_checkpoint(run / "checkpoint.pt")
    assert resumed["epoch"] == 2 and resumed["config"]["model"]["dropout_convention"] == "inverted"
    code, out, err = twocol_in_process(capsys, "eval", "--ckpt", run / "checkpoint.pt", *common)
    assert code == 0, err
    code, _, err = twocol_in_process(capsys, "eval", "--ckpt", run / "checkpoint.pt", *common,
                                     "-c", "configs/tiny_twocol.yaml", "model.num_classes=4", "model.dropout=0.5")
    assert code == 2 and "multiplies fc6 and fc7 by 1 at test" in err and "model.dropout_convention" in err


@pytest.mark.parametrize("name,convention", [
    ("alexnet_paper", "paper"), ("alexnet_onecol", "paper"), ("alexnet_2012code", "paper"),
    ("alexnet_2012code_2010", "paper"), ("alexnet_2012code_onecol", "paper"), ("alexnet_2012code_onecol_2010", "paper"),
    ("small_twocol", "inverted"), ("small_onecol", "inverted"),  # what the quick-start figures were measured with
    ("tiny_twocol", "paper"), ("tiny_onecol", "paper"),  # no dropout: the same net either way
])
def test_each_config_chooses_its_dropout_convention(name, convention):
    m = config(name).model
    assert m.dropout_convention == convention and (m.dropout == 0.0) == name.startswith("tiny")
