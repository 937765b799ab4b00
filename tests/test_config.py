import pytest

from conftest import config
from twocol.config import load_config
from twocol.typed_yaml import parse_override
from twocol.errors import ConfigError


def test_paper_config_holds_the_papers_lrn_and_init():
    cfg = config("alexnet_paper")
    lrn = cfg.model.lrn
    assert (lrn.k, lrn.size, lrn.alpha, lrn.beta, lrn.alpha_convention, lrn.layer1_order) == (
        2.0, 5, 1e-4, 0.75, "sum", "relu_lrn")
    assert cfg.init.weight_std == 0.01 and cfg.init.bias_one == ["conv2", "conv4", "conv5", "fc6", "fc7"]


def test_2012_config_differs_where_the_2012_code_does():
    cfg = config("alexnet_2012code")
    assert cfg.model.lrn.layer1_order == "lrn_relu" and cfg.model.lrn.alpha_convention == "mean"
    assert cfg.model.spatial_norm.enabled and cfg.model.spatial_norm.size == 5
    assert cfg.init.layer_std == {"conv3": 0.03, "conv4": 0.03, "conv5": 0.03}
    assert cfg.optim.lr * cfg.optim.bias_lr_mult == pytest.approx(0.02)


def test_overrides_reach_nested_keys_with_typed_values():
    cfg = config("alexnet_paper", "model.lrn.enabled=false", "data.batch_size=64", "model.dropout=0",
                 "model.pool.kernel=2", "model.activation=tanh")
    assert cfg.model.lrn.enabled is False and cfg.data.batch_size == 64
    assert cfg.model.dropout == 0.0 and isinstance(cfg.model.dropout, float)
    assert cfg.model.pool.kernel == 2 and cfg.model.activation == "tanh"


@pytest.mark.parametrize("override,message", [
    ("model.lrn.alpah=1", "unknown key 'model.lrn.alpah'"),
    ("model.dropout=lots", "model.dropout must be float"),
    ("data.batch_size=1.5", "data.batch_size must be int"),
    ("model.activation=sigmoid", "model.activation must be 'relu' | 'tanh'"),
    ("model.lrn.size=4", "model.lrn.size must be a positive odd number"),
    ("model.conv_widths=[1,2]", "model.conv_widths must list 5 widths"),
    ("init.layer_std={conv9: 0.1}", "names no layer"),
    ("nonsense", "is not key=value"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("|", r"\|").replace("[", r"\[")):
        config("alexnet_paper", override)


def test_missing_file_and_bad_yaml_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("modle: {}\n")
    with pytest.raises(ConfigError, match="unknown.yaml: unknown key 'modle'"):
        load_config(unknown)


def test_exponent_without_a_dot_is_a_float():
    cfg = config("alexnet_paper", "optim.lr=1e-3", "model.lrn.alpha=2e-5")
    assert cfg.optim.lr == 1e-3 and cfg.model.lrn.alpha == 2e-5


def test_parse_override_builds_nested_mapping():
    assert parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}


def test_2012_code_recipe_and_its_one_column_counterpart():
    cfg = config("alexnet_2012code")
    assert not cfg.optim.bias_lr_scheduled and not cfg.optim.bias_weight_decay
    assert cfg.schedule.kind == "fixed" and cfg.schedule.milestones == [25, 51, 79]
    assert [(s.layer, s.epoch, s.weight_lr, s.bias_lr) for s in cfg.schedule.layer_steps] == [
        ("conv1", 67, 1e-5, None), ("conv1", 72, 0.0, 0.0)]
    v2010 = config("alexnet_2012code_2010")
    assert v2010.schedule.milestones == [23, 51, 78] and [s.epoch for s in v2010.schedule.layer_steps] == [68, 72]
    # The one-column counterparts change the architecture and nothing else.
    for two, one in (("alexnet_2012code", "alexnet_2012code_onecol"),
                     ("alexnet_2012code_2010", "alexnet_2012code_onecol_2010"),
                     ("alexnet_paper", "alexnet_onecol"), ("tiny_twocol", "tiny_onecol"),
                     ("small_twocol", "small_onecol")):
        a, b = config(two).to_dict(), config(one).to_dict()
        for d in (a, b):
            del d["name"], d["description"]
            for key in ("arch", "conv_widths", "fc_widths"):
                del d["model"][key]
        if two == "alexnet_paper":  # the paper config names the spatial norm off explicitly; same thing
            assert a["model"].pop("spatial_norm") == b["model"].pop("spatial_norm")
        assert a == b, (two, one)
    assert config("alexnet_2012code_onecol").model.conv_widths == [48, 128, 192, 192, 256]


def test_a_config_may_start_from_a_base(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\nmodel: {dropout: 0.3, lrn: {k: 1.0}}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nname: child\nmodel: {lrn: {alpha: 2.0e-4}}\n")
    cfg = load_config(tmp_path / "child.yaml", ["model.lrn.beta=0.5"])
    assert (cfg.name, cfg.model.dropout, cfg.model.lrn.k, cfg.model.lrn.alpha, cfg.model.lrn.beta) == (
        "child", 0.3, 1.0, 2e-4, 0.5)
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="base chain returns to itself"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "orphan.yaml").write_text("base: gone.yaml\n")
    with pytest.raises(ConfigError, match=r"config file not found: .*gone.yaml \(base of .*orphan.yaml\)"):
        load_config(tmp_path / "orphan.yaml")


@pytest.mark.parametrize("override,message", [
    ("schedule.layer_steps=[{layer: conv9, epoch: 3, weight_lr: 0}]", r"schedule.layer_steps\[0\] names no layer"),
    ("schedule.layer_steps=[{layer: conv1, epoch: 3}]", "sets neither weight_lr nor bias_lr"),
    ("schedule.layer_steps=[{layer: conv1, epoch: 3, bias_lr: -1}]", "rates must be >= 0"),
    ("schedule.smoothing=1", "schedule.smoothing must be in"),
    ("model.padding.conv5=-1", "model.padding must be >= 0"),
])
def test_bad_schedule_and_padding_values(override, message):
    with pytest.raises(ConfigError, match=message):
        config("alexnet_paper", override)
