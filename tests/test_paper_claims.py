"""The paper's last two claims as ablations, and every ablation defined once: a middle conv layer
removed (section 7's depth claim), dropout off (section 4.2), and the one entry per ablation that
the CLI, `twocol describe`, bench/paper.py and bench/report.py read."""
import json

import pytest
import torch
import torch.nn.functional as F

from conftest import config, twocol_in_process
from twocol.ablations import ABLATIONS, ablation_overrides, apply_ablations
from twocol.devices import Placement
from twocol.errors import ConfigError
from twocol.model import TwoColumnNet, build_model, count_parameters
from twocol.netsize import size_estimate
from twocol.reference import GroupedNet



def conv(c_in, c_out, k):
    return c_in * c_out * k * k + c_out


# Per column of the paper's net: conv1 48, conv2 128, conv3 192 (from both columns' 2 x 128),
# conv4 192, conv5 128.
DEPTH_FULL = {
    # conv2 (48 -> 128, 5x5) goes; conv3 reads both columns' 48 pooled conv1 maps instead of 2 x 128.
    "conv2_off": 60_965_224 - 2 * conv(48, 128, 5) - 2 * (conv(256, 192, 3) - conv(96, 192, 3)),
    # conv3 goes, its link stays: conv4 reads both columns' pool2 (2 x 128) instead of 192 maps.
    "conv3_off": 60_965_224 - 2 * conv(256, 192, 3) - 2 * (conv(192, 192, 3) - conv(256, 192, 3)),
    # conv3 and its link go: conv4 reads its own column's 128 pool2 maps.
    "conv3_and_link_off": 60_965_224 - 2 * conv(256, 192, 3) - 2 * (conv(192, 192, 3) - conv(128, 192, 3)),
    # conv4 (192 -> 192) goes; conv5 reads conv3's 192 maps, as many as conv4 read.
    "conv4_off": 60_965_224 - 2 * conv(192, 192, 3),
}


def test_depth_ablations_at_full_size_have_the_parameters_counted_by_hand():
    assert DEPTH_FULL == {"conv2_off": 60_104_808, "conv3_off": 60_301_288, "conv3_and_link_off": 59_858_920,
                          "conv4_off": 60_301_288}
    base = config("alexnet_paper")
    nets = {}
    for name, want in DEPTH_FULL.items():
        cfg = apply_ablations(base, [name])
        with torch.device("meta"):  # shapes only: no 60M-weight init
            nets[name] = net = TwoColumnNet(cfg.model, Placement.cpu())
        assert count_parameters(net) == want == size_estimate(cfg.model)[0], name
    c2, c3, c3l = nets["conv2_off"].col_a, nets["conv3_off"].col_a, nets["conv3_and_link_off"].col_a
    assert c2.conv2 is None and c2.norm2 is None and c2.pool2 is not None and c2.conv3.in_channels == 96
    assert set(nets["conv3_off"].links) == {"conv4", "fc6", "fc7", "fc8"} and c3.conv3 is None
    assert c3.conv4.in_channels == 256 and c3.conv5.in_channels == 192
    assert set(nets["conv3_and_link_off"].links) == {"fc6", "fc7", "fc8"} and c3l.conv4.in_channels == 128


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DEPTH_FULL))
def test_describe_shows_the_full_size_depth_ablations(capsys, name):
    code, out, err = twocol_in_process(capsys, "describe", "-c", "configs/alexnet_paper.yaml", "--gpus", "cpu",
                                       "--json", "--ablation", name)
    assert code == 0, err
    d = json.loads(out)
    assert d["total_params"] == DEPTH_FULL[name] and name[:5] not in {r["layer"] for r in d["layers"]}


def test_describe_shows_the_depth_ablations_at_the_cpu_scale(capsys):
    args = ["describe", "-c", "configs/tiny_twocol.yaml", "--gpus", "cpu", "--json"]
    base = json.loads(twocol_in_process(capsys, *args)[1])
    rows = {}
    for name in ("conv2_off", "conv3_off", "conv3_and_link_off", "conv4_off"):
        code, out, err = twocol_in_process(capsys, *args, "--ablation", name)
        assert code == 0, err
        rows[name] = json.loads(out)
    # tiny_twocol per column: conv1 8, conv2 16 (5x5), conv3 24 (from both columns' 16), conv4 24, conv5 16.
    assert base["total_params"] == 1_132_522
    assert rows["conv2_off"]["total_params"] == 1_132_522 - 2 * conv(8, 16, 5) - 2 * (conv(32, 24, 3) - conv(16, 24, 3))
    assert rows["conv3_off"]["total_params"] == 1_132_522 - 2 * conv(32, 24, 3) - 2 * (conv(24, 24, 3) - conv(32, 24, 3))
    assert rows["conv3_and_link_off"]["total_params"] == (1_132_522 - 2 * conv(32, 24, 3)
                                                          - 2 * (conv(24, 24, 3) - conv(16, 24, 3)))
    assert rows["conv4_off"]["total_params"] == 1_132_522 - 2 * conv(24, 24, 3) == 1_122_106
    layers = {n: {(r["layer"], r["column"]): r for r in d["layers"]} for n, d in rows.items()}
    assert ("conv2", "A") not in layers["conv2_off"] and layers["conv2_off"][("conv3", "B")]["params"] == conv(16, 24, 3)
    assert layers["conv2_off"][("pool2", "A")]["output"] == [8, 4, 4]  # pool2 of pool1 (9x9 -> 4x4)
    assert ("conv4", "A") not in layers["conv4_off"] and layers["conv4_off"][("conv5", "B")]["params"] == conv(24, 16, 3)
    assert ("conv3", "B") not in layers["conv3_off"] and layers["conv3_off"][("conv4", "A")]["params"] == conv(32, 24, 3)
    assert layers["conv3_and_link_off"][("conv4", "A")]["params"] == conv(16, 24, 3)
    assert [link["link"] for link in rows["conv3_off"]["links"]] == ["conv4", "fc6", "fc7", "fc8"]
    assert [link["link"] for link in rows["conv3_and_link_off"]["links"]] == ["fc6", "fc7", "fc8"]
    assert [link["link"] for link in rows["conv4_off"]["links"]] == ["conv3", "fc6", "fc7", "fc8"]
    # The link carries the same maps to conv4 as it carried to conv3: both columns' pool2.
    bytes_of = {n: {link["link"]: link["bytes_per_image"] for link in d["links"]} for n, d in rows.items()}
    assert bytes_of["conv3_off"]["conv4"] == bytes_of["conv4_off"]["conv3"] == 2 * 16 * 4 * 4 * 4
    assert rows["conv3_off"]["ablations"][0]["claim"] == ABLATIONS["conv3_off"].claim
    code, out, _ = twocol_in_process(capsys, "describe", "-c", "configs/tiny_twocol.yaml", "--gpus", "cpu",
                                     "--ablation", "conv4_off")
    assert code == 0 and "ablation conv4_off: conv4 removed from both columns" in out and "1,122,106" in out


@pytest.mark.parametrize("ablation", ["conv2_off", "conv3_off", "conv3_and_link_off", "conv4_off"])
def test_a_net_without_a_middle_layer_is_the_grouped_net_without_it_in_float64(ablation):
    """The columns meet only at the links (the isolation checker is on), and compute what the
    one-device grouped net computes, forward and backward."""
    cfg = apply_ablations(config("tiny_twocol"), [ablation])
    net = build_model(cfg, Placement.cpu(), seed=1).double().eval()
    ref = GroupedNet(cfg.model, torch.device("cpu")).double().eval().copy_from(net)
    x = torch.randn(3, 3, 40, 40, dtype=torch.float64)
    out, out_ref = net(x), ref(x)
    torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-12)
    F.cross_entropy(out, torch.tensor([0, 1, 2])).backward()
    F.cross_entropy(out_ref, torch.tensor([0, 1, 2])).backward()
    torch.testing.assert_close(torch.cat([net.col_a.conv5.weight.grad, net.col_b.conv5.weight.grad]),
                               ref.conv5.weight.grad, rtol=1e-9, atol=1e-12)
    assert set(net.links) == {"conv2_off": {"conv3", "fc6", "fc7", "fc8"}, "conv3_off": {"conv4", "fc6", "fc7", "fc8"},
                              "conv3_and_link_off": {"fc6", "fc7", "fc8"},
                              "conv4_off": {"conv3", "fc6", "fc7", "fc8"}}[ablation]


def test_depth_and_dropout_ablations_refuse_what_they_cannot_be():
    with pytest.raises(ConfigError, match="conv4_off: the config has no conv4 to remove"):
        ablation_overrides(config("tiny_twocol", "model.layers_off=[conv4]"), ["conv4_off"])
    with pytest.raises(ConfigError, match="model.layers_off may name conv2, conv3, conv4, each once"):
        config("tiny_twocol", "model.layers_off=[conv5]")
    with pytest.raises(ConfigError, match="model.conv_link names conv3, which model.layers_off removes: .* "
                                          r"\(the next one: conv4\) or none"):
        config("tiny_twocol", "model.layers_off=[conv3]")
    with pytest.raises(ConfigError, match="conv3_and_link_off: conv3 is not where the columns meet"):
        ablation_overrides(config("tiny_twocol", "model.conv_link=conv4"), ["conv3_and_link_off"])
    assert ablation_overrides(config("tiny_twocol"), ["conv3_off", "conv4_off"]) == [
        "model.layers_off=[conv3]", "model.conv_link=conv4", "model.layers_off=[conv3, conv4]",
        "model.conv_link=conv5"]
    assert ablation_overrides(config("tiny_twocol"), ["conv4_off", "conv3_off"]) == [
        "model.layers_off=[conv4]", "model.layers_off=[conv4, conv3]", "model.conv_link=conv5"]
    assert ablation_overrides(config("alexnet_paper"), ["dropout_off"]) == ["model.dropout=0"]
    # A config with dropout is its own baseline; one without gets the paper's dropout first.
    assert ABLATIONS["dropout_off"].baseline(config("alexnet_paper")) == []
    assert ABLATIONS["dropout_off"].baseline(config("tiny_twocol")) == ["model.dropout=0.5",
                                                                         "model.dropout_convention=paper"]


def test_every_ablation_is_one_entry_that_the_report_reads():
    from bench.report.paper import directions, label
    for name, a in ABLATIONS.items():
        assert a.name == name and a.what and a.claim and a.label and len(a.directions) == 2
        assert label(name) == a.label and directions(name) == a.directions


def test_a_checkpoint_from_before_conv_link_without_conv3_reads_as_the_net_it_was():
    """conv3 in model.layers_off once took the conv3 link with it; such a stored config reads as
    model.conv_link=none (the columns meeting only at the fc links), not as an invalid config."""
    from twocol.checkpoint import checkpoint_config
    old = config("tiny_twocol", "model.layers_off=[conv3]", "model.conv_link=none").to_dict()
    del old["model"]["conv_link"]
    cfg = checkpoint_config({"config": old}, "old.pt")
    assert cfg.model.conv_link == "none" and cfg.model.layers_off == ["conv3"]
    kept = config("tiny_twocol", "model.layers_off=[conv4]").to_dict()
    del kept["model"]["conv_link"]
    assert checkpoint_config({"config": kept}, "old.pt").model.conv_link == "conv3"
