"""The ablations: net 147 (pool_2x2) and net 148 (lrn_off) as the 2012 code built them, one
definition for the CLI and the bench."""
import json
import pytest
import torch

from conftest import config
from twocol.cli import main
from twocol.ablations import ABLATIONS, ablation_overrides, apply_ablations
from twocol.describe import describe
from twocol.devices import Placement
from twocol.errors import ConfigError
from twocol.layers import feature_sides, pool_side
from twocol.model import TwoColumnNet, build_model, count_parameters

# Net 147's map sides at a 224 input (layers-147.cfg with cuda-convnet's size rules): pool1 and
# conv2 differ from the overlapping-pool net, pool2 and pool5 (what conv3 and fc6 see) do not.
NET_145 = {"conv1": 55, "pool1": 27, "conv2": 27, "pool2": 13, "conv3": 13, "conv4": 13, "conv5": 13, "pool5": 6}
NET_147 = {"conv1": 55, "pool1": 28, "conv2": 26, "pool2": 13, "conv3": 13, "conv4": 13, "conv5": 11, "pool5": 6}


def sides_run(cfg) -> dict:
    """Each layer's output side as the net computes it (a forward pass through `describe`)."""
    return {r["layer"]: r["output"][-1] for r in describe(cfg, Placement.cpu())["layers"]
            if r["layer"] in NET_145 and r["column"] == "A"}


@pytest.mark.parametrize("name", ["alexnet_paper", "alexnet_2012code"])
def test_pool_2x2_is_net_147_at_full_size(name):
    base = config(name)
    ablated = apply_ablations(base, ["pool_2x2"])
    assert feature_sides(base.model) == NET_145 and feature_sides(ablated.model) == NET_147
    p = ablated.model
    assert (p.pool.kernel, p.pool.stride, p.pool.round_up, p.padding.conv2, p.padding.conv5) == (2, 2, True, 1, 0)
    with torch.device("meta"):  # shapes only: no 60M-weight init
        assert count_parameters(TwoColumnNet(ablated.model, Placement.cpu())) == 60_965_224


@pytest.mark.parametrize("name", ["tiny_twocol", "tiny_onecol", "small_twocol"])
def test_pool_2x2_keeps_every_size_that_matters_at_the_cpu_scale(name):
    base = config(name)
    ablated = apply_ablations(base, ["pool_2x2"])
    run = sides_run(ablated)
    assert run == feature_sides(ablated.model)  # the formula is what PyTorch computes
    assert run["pool2"] == feature_sides(base.model)["pool2"] and run["pool5"] == feature_sides(base.model)["pool5"]
    net = build_model(base, Placement.cpu())
    assert count_parameters(build_model(ablated, Placement.cpu())) == count_parameters(net)


def test_pool_2x2_refuses_a_config_where_it_would_change_the_net():
    with pytest.raises(ConfigError, match="pool_2x2 would change pool2 from 3x3 to 4x4"):
        ablation_overrides(config("tiny_twocol", "model.input_size=36", "data.image_size=40"), ["pool_2x2"])


def test_pool_side_is_pytorchs_ceil_mode():
    for n in range(1, 30):
        for k, s in ((2, 2), (3, 2), (3, 3), (2, 3)):
            for up in (False, True):
                try:
                    want = torch.nn.MaxPool2d(k, s, ceil_mode=up)(torch.zeros(1, 1, n, n)).shape[-1]
                except RuntimeError:
                    want = 0
                assert max(pool_side(n, k, s, up), 0) == want, (n, k, s, up)


def test_lrn_off_is_net_148_removing_the_spatial_norm_too():
    assert ablation_overrides(config("alexnet_paper"), ["lrn_off"]) == ["model.lrn.enabled=false"]
    cfg = apply_ablations(config("alexnet_2012code"), ["lrn_off"])
    assert not cfg.model.lrn.enabled and not cfg.model.spatial_norm.enabled
    with torch.device("meta"):
        assert TwoColumnNet(cfg.model, Placement.cpu()).col_a.norm2.spatial is None


def test_ablations_compose_and_name_unknown_ones():
    cfg = apply_ablations(config("tiny_twocol"), ["tanh", "lighting_off", "pool_2x2"])
    assert cfg.model.activation == "tanh" and cfg.data.lighting_std == 0 and cfg.model.pool.kernel == 2
    with pytest.raises(ConfigError, match="unknown ablation 'lrn'; the ablations are lrn_off, pool_2x2"):
        ablation_overrides(config("tiny_twocol"), ["lrn"])
    assert set(ABLATIONS) == {"lrn_off", "pool_2x2", "tanh", "lighting_off", "conv2_off", "conv3_off",
                              "conv3_and_link_off", "conv4_off", "dropout_off"}


def twocol(capsys, *args):
    """The CLI in this process (the subprocess tests of test_cli.py cover the entry point)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_applies_what_the_bench_applies(capsys):
    args = ["describe", "-c", "configs/tiny_twocol.yaml", "--json", "--gpus", "cpu"]
    code, out, err = twocol(capsys, *args, "--ablation", "pool_2x2", "--ablation", "lrn_off")
    assert code == 0, err
    by_hand = twocol(capsys, *args, *ablation_overrides(config("tiny_twocol"), ["pool_2x2", "lrn_off"]))[1]
    described, hand = json.loads(out), json.loads(by_hand)
    assert [a["name"] for a in described.pop("ablations")] == ["pool_2x2", "lrn_off"] and hand.pop("ablations") == []
    assert described == hand
    base = json.loads(twocol(capsys, *args)[1])
    assert json.loads(out)["total_params"] == base["total_params"]
    assert json.loads(out)["layers"] != base["layers"]  # pool1, conv2 and conv5 outputs differ


@pytest.mark.parametrize("args,needle", [
    (["describe", "-c", "configs/tiny_twocol.yaml", "--ablation", "bogus"], "unknown ablation 'bogus'"),
    (["eval", "--ckpt", "x.pt", "--ablation", "lrn_off"], "--ablation needs --config"),
    (["train", "--resume", "x.pt", "--ablation", "lrn_off"], "--ablation needs --config"),
])
def test_bad_ablation_use_is_one_line_and_exit_code_2(capsys, args, needle):
    code, _, err = twocol(capsys, *args)
    assert code == 2 and err.count("\n") == 1 and needle in err, err


@pytest.mark.parametrize("ablation,already", [
    ("lrn_off", "model.lrn.enabled=false"), ("lighting_off", "data.lighting_std=0"),
    ("tanh", "model.activation=tanh"), ("dropout_off", "model.dropout=0"),
])
def test_an_ablation_that_changes_nothing_is_refused(capsys, tmp_path, ablation, already):
    for command in (["describe"], ["train", "--gpus", "cpu", "--run-dir", tmp_path / "run"]):
        code, _, err = twocol(capsys, *map(str, command), "-c", "configs/small_twocol.yaml", already,
                              "--ablation", ablation)
        assert code == 2 and err == f"twocol: error: ablation {ablation} changes nothing: the config already has " \
                                    f"{already}\n", err
    assert not (tmp_path / "run").exists()


def test_the_bench_ablates_a_baseline_that_has_what_its_config_lacks():
    tiny = config("tiny_twocol")  # no dropout: dropout_off alone would change nothing
    with pytest.raises(ConfigError, match="dropout_off changes nothing"):
        ablation_overrides(tiny, ["dropout_off"])
    baseline = config("tiny_twocol", *ABLATIONS["dropout_off"].baseline(tiny))
    assert ablation_overrides(baseline, ["dropout_off"]) == ["model.dropout=0"]
