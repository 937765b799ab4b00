import pytest
import torch
import torch.nn.functional as F

from conftest import config
from twocol import sim
from twocol.devices import Placement
from twocol.layers import feature_sides
from twocol.model import TwoColumnNet, build_model, count_parameters
from twocol.reference import GroupedNet


def test_paper_net_has_exactly_the_papers_parameter_count():
    net = build_model(config("alexnet_paper"), Placement.cpu(), seed=0)
    assert count_parameters(net) == 60_965_224


def test_2012_code_net_has_the_same_parameters_as_the_paper_net():
    net = build_model(config("alexnet_2012code"), Placement.cpu(), seed=0)
    assert count_parameters(net) == 60_965_224


def test_one_column_comparison_net_has_exactly_its_parameter_count():
    net = build_model(config("alexnet_onecol"), Placement.cpu(), seed=0)
    assert count_parameters(net) == 59_798_312


def test_tiny_nets_keep_the_papers_balance_of_parameters():
    """The one-column net has 1.9% fewer parameters than the two-column net at full size; the
    CPU protocol's tiny nets must be as close (within 2%)."""
    two = count_parameters(build_model(config("tiny_twocol"), Placement.cpu(), seed=0))
    one = count_parameters(build_model(config("tiny_onecol"), Placement.cpu(), seed=0))
    assert (two, one) == (1_132_522, 1_113_098)
    assert 0 < 1 - one / two < 0.02 and 1 - 59_798_312 / 60_965_224 < 0.02


def test_paper_net_gives_1000_logits_on_column_a_and_55x55_conv1():
    cfg = config("alexnet_paper")
    assert feature_sides(cfg.model)["conv1"] == 55 and feature_sides(cfg.model)["pool5"] == 6
    net = build_model(cfg, Placement.cpu(), seed=0).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, 1000) and out.device == net.placement.a


def test_parameters_live_on_their_columns_device_and_are_tagged():
    net = build_model(config("small_twocol"), Placement.cpu(), seed=0)
    for name, p in net.named_parameters():
        assert sim.column_of(p) == ("B" if name.startswith("col_b.") else "A")
    assert all(sim.column_of(p) == "B" for p in net.col_b.parameters())
    assert sim.column_of(net.fc8.weight) == "A"


def test_paper_init_follows_the_config():
    net = build_model(config("alexnet_2012code"), Placement.cpu(), seed=0)
    for col in (net.col_a, net.col_b):
        assert torch.all(col.conv1.bias == 0) and torch.all(col.conv3.bias == 0)
        assert torch.all(col.conv2.bias == 1) and torch.all(col.fc7.bias == 1)
        assert abs(col.conv1.weight.std().item() - 0.01) < 1e-3
        assert abs(col.conv4.weight.std().item() - 0.03) < 2e-3
    assert torch.all(net.fc8.bias == 0)


def test_kaiming_init_with_a_per_layer_std():
    net = build_model(config("tiny_twocol"), Placement.cpu(), seed=0)  # fc8: N(0, 0.01)
    assert abs(net.fc8.weight.std().item() - 0.01) < 1e-3 and torch.all(net.fc8.bias == 0)
    fc7 = torch.cat([net.col_a.fc7.weight, net.col_b.fc7.weight])
    assert abs(fc7.std().item() - (2 / 1024) ** 0.5) < 2e-3  # Kaiming: sqrt(2 / fan_in)


def test_same_seed_gives_same_weights_whatever_the_global_rng():
    cfg = config("small_twocol")
    a = build_model(cfg, Placement.cpu(), seed=3)
    torch.rand(100)
    b = build_model(cfg, Placement.cpu(), seed=3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("name,overrides", [
    ("small_twocol", ()),
    ("alexnet_2012code", ("model.input_size=67", "model.conv1.stride=2", "model.conv_widths=[4,8,8,8,6]",
                          "model.fc_widths=[16,16]", "model.num_classes=7", "data.image_size=72")),
    ("small_twocol", ("model.activation=tanh", "model.pool.kernel=2")),
    # net 147's geometry (the pool_2x2 ablation): pools that round up, conv2 and conv5 padded one less
    ("small_twocol", ("model.pool.kernel=2", "model.pool.round_up=true", "model.padding.conv2=1",
                      "model.padding.conv5=0")),
    ("small_twocol", ("model.lrn.enabled=false",)),
])
def test_two_columns_equal_grouped_convolutions_in_float64(name, overrides):
    cfg = config(name, *overrides)
    net = build_model(cfg, Placement.cpu(), seed=1).double().eval()
    ref = GroupedNet(cfg.model, torch.device("cpu")).double().eval().copy_from(net)
    x = torch.randn(3, 3, cfg.model.input_size, cfg.model.input_size, dtype=torch.float64)
    y = torch.randint(0, cfg.model.num_classes, (3,))
    out, out_ref = net(x), ref(x)
    torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-12)
    F.cross_entropy(out, y).backward()
    F.cross_entropy(out_ref, y).backward()
    for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"):
        for attr in ("weight", "bias"):
            got = torch.cat([getattr(getattr(c, layer), attr).grad for c in (net.col_a, net.col_b)])
            torch.testing.assert_close(got, getattr(getattr(ref, layer), attr).grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(net.fc8.weight.grad, ref.fc8.weight.grad, rtol=1e-9, atol=1e-12)


def test_link_bytes_are_the_sizes_of_what_crossed_and_nothing_else_crosses():
    cfg = config("small_twocol")
    net = build_model(cfg, Placement.cpu(), seed=0)
    n = 5
    out = net(torch.randn(n, 3, 64, 64))
    out.sum().backward()
    side2, side5 = feature_sides(cfg.model)["pool2"], feature_sides(cfg.model)["pool5"]
    w, f = cfg.model.conv_widths, cfg.model.fc_widths
    f32 = 4
    expected = {  # conv3, fc6 and fc7 go both ways; fc8 only from B to A
        "conv3": 2 * n * w[1] * side2 ** 2 * f32,
        "fc6": 2 * n * w[4] * side5 ** 2 * f32,
        "fc7": 2 * n * f[0] * f32,
        "fc8": n * f[1] * f32,
    }
    assert net.link_bytes() == {k: {"forward": v, "backward": v} for k, v in expected.items()}


class LeakyNet(TwoColumnNet):
    """Column B's conv3 reads column A's pool2 directly, skipping the link."""

    def forward(self, x):
        with self.run_a:
            pool2_a = self.col_a.stages[0](x)
        with self.run_b:
            pool2_b = self.col_b.stages[0](x)
            return self.col_b.conv3(torch.cat([pool2_a, pool2_b], 1))


def test_isolation_checker_catches_a_tensor_that_skips_the_links():
    cfg = config("small_twocol")
    leaky = LeakyNet(cfg.model, Placement.cpu()).place()
    with pytest.raises(sim.IsolationError, match="column B ran .* produced by column A"):
        leaky(torch.randn(2, 3, 64, 64))


def test_isolation_checker_catches_a_parameter_used_by_the_other_column():
    net = build_model(config("small_twocol"), Placement.cpu(), seed=0)
    with net.run_b:
        with pytest.raises(sim.IsolationError):
            F.conv2d(torch.randn(1, 3, 64, 64), net.col_a.conv1.weight)


def test_checker_is_silent_on_the_real_net_forward_and_backward():
    net = build_model(config("small_twocol"), Placement.cpu(), seed=0)
    net(torch.randn(2, 3, 64, 64)).sum().backward()
