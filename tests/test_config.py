"""Specification of fewshot_acdc.config: YAML + overrides -> one validated TrainConfig."""
from pathlib import Path

import pytest

from fewshot_acdc.config import CONFIG_KEYS, ConfigError, TrainConfig, load_config, save_config

ROOT = Path(__file__).resolve().parents[1]


def test_overrides_win_over_yaml(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("backbone: resnet10\nacdc: block\ninner_lr: 0.02\n")
    config = load_config(base, {"inner_lr": 0.5, "shots": 5})
    assert (config.backbone, config.acdc, config.inner_lr, config.shots) == ("resnet10", "block", 0.5, 5)
    assert config.conv_kind == "acdc-block"


def test_saved_config_round_trips(tmp_path):
    config = load_config(None, {"backbone": "conv4", "acdc": "g-net", "group_size": 32, "grad_clip": 10})
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    assert isinstance(load_config(path), TrainConfig)


def test_unknown_key_in_yaml_names_the_file_and_the_closest_key(tmp_path):
    base = tmp_path / "bad.yaml"
    base.write_text("inner_step: 5\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'inner_step' in .*bad.yaml \(did you mean 'inner_steps'\?\)"):
        load_config(base)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"backbone": "resnet50"}, r"backbone: 'resnet50' is not one of conv4, resnet10, resnet18, resnet34"),
        ({"adapt": "atom"}, r"did you mean 'atoms'"),
        ({"ways": 0}, "ways must be >= 1"),
        ({"threads": 0}, "threads must be >= 1"),
        ({"inner_lr": -1.0}, "inner_lr must be > 0"),
        ({"atom_drop": 1.0}, r"atom_drop must be in \[0, 1\)"),
        ({"inner_steps": 2.5}, "inner_steps must be int"),
        ({"first_order": "yes"}, "first_order must be bool"),
        ({"acdc": "g-block"}, "needs group_size"),
        ({"acdc": "net", "group_size": 32}, "group_size is only used with"),
        ({"acdc": "none", "adapt": "atoms"}, "adapts ACDC atoms, but acdc is 'none'"),
    ],
)
def test_bad_values_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_missing_or_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")


def test_ints_are_accepted_for_floats():
    assert load_config(None, {"meta_lr": 1}).meta_lr == 1.0
    assert "meta_lr" in CONFIG_KEYS
