import pytest

from conftest import config
from twocol.config import load_config, parse_override
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
