"""The CUDA path: run by bench/gpu_check.sh on a GPU machine, skipped elsewhere."""
import pytest
import torch
import torch.nn.functional as F

from conftest import config
from twocol.devices import Placement
from twocol.model import build_model
from twocol.reference import GroupedNet
from twocol.optim import make_optimizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("streams", [False, True])
def test_two_columns_on_one_gpu_equal_grouped_convolutions(streams):
    cfg = config("alexnet_paper", "model.dropout=0")
    placement = Placement.parse("0")
    net = build_model(cfg, placement, seed=0).double()
    net.use_streams(streams)
    ref = GroupedNet(cfg.model, placement.a).double().copy_from(net)
    x = torch.randn(4, 3, 224, 224, dtype=torch.float64, device="cuda")
    y = torch.randint(0, 1000, (4,), device="cuda")
    out, out_ref = net(x), ref(x)
    torch.testing.assert_close(out, out_ref, rtol=1e-9, atol=1e-11)
    F.cross_entropy(out, y).backward()
    F.cross_entropy(out_ref, y).backward()
    for layer in ("conv1", "conv3", "conv5", "fc6"):
        got = torch.cat([getattr(c, layer).weight.grad for c in (net.col_a, net.col_b)])
        torch.testing.assert_close(got, getattr(ref, layer).weight.grad, rtol=1e-8, atol=1e-11)


def test_gpu_training_steps_follow_the_cpu_simulation():
    """The same recipe on every placement: a few float64 steps on cuda:0 (column streams on)
    and in the CPU simulation give the same losses."""
    cfg = config("small_twocol", "model.dropout=0")
    nets = {"cpu": build_model(cfg, Placement.cpu(), seed=0).double(),
            "gpu": build_model(cfg, Placement.parse("0"), seed=0).double()}
    nets["gpu"].use_streams(True)
    opts = {k: make_optimizer(n, cfg.optim) for k, n in nets.items()}
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(16, 3, 64, 64, dtype=torch.float64, generator=gen)
        y = torch.randint(0, 10, (16,), generator=gen)
        losses = {}
        for k, net in nets.items():
            dev = net.placement.a
            loss = F.cross_entropy(net(x.to(dev)), y.to(dev))
            opts[k].zero_grad()
            loss.backward()
            opts[k].step()
            losses[k] = loss.item()
        assert abs(losses["cpu"] - losses["gpu"]) < 1e-8, losses


def test_link_bytes_on_gpu_match_the_cpu_count():
    cfg = config("small_twocol")
    counts = {}
    for spec in ("cpu", "0"):
        net = build_model(cfg, Placement.parse(spec), seed=0)
        net.use_streams(True)
        net(torch.randn(3, 3, 64, 64, device=net.placement.a)).sum().backward()
        counts[spec] = net.link_bytes()
    assert counts["cpu"] == counts["0"]


@pytest.mark.parametrize("streams", [True, False])
def test_a_captured_training_step_replays_the_eager_step(streams):
    """bench/throughput.py's CUDA-graph lever: the whole step (both column streams captured)
    replayed twice lands where two more eager steps do, in float64."""
    from bench.throughput import capture_step
    cfg = config("small_twocol", "model.dropout=0")
    placement = Placement.parse("0")
    nets = [build_model(cfg, placement, seed=0).double() for _ in range(2)]
    opts = [make_optimizer(n, cfg.optim) for n in nets]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 64, 64, dtype=torch.float64, generator=gen).cuda()
    y = torch.randint(0, 10, (16,), generator=gen).cuda()
    for net in nets:
        net.use_streams(streams)

    def body(net, opt):
        F.cross_entropy(net(x), y).backward()
        opt.step()

    graph = capture_step(lambda: body(nets[1], opts[1]), opts[1], placement.a, [placement.a])  # 3 warm-up steps
    for _ in range(3 + 2):
        opts[0].zero_grad(set_to_none=True)
        body(nets[0], opts[0])
    for _ in range(2):
        graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
