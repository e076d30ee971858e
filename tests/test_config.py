"""Specification of fewshot_acdc.config: YAML + overrides -> one validated TrainConfig."""
from pathlib import Path

import pytest

from fewshot_acdc.config import (CONFIG_KEYS, ConfigError, TrainConfig, canonical_values, load_config, load_saved_config,
                                 save_config)

ROOT = Path(__file__).resolve().parents[1]


def test_overrides_win_over_yaml(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("backbone: resnet10\nacdc: block\ninner_lr: 0.02\n")
    config = load_config(base, {"inner_lr": 0.5, "shots": 5})
    assert (config.backbone, config.conv, config.inner_lr, config.shots) == ("resnet10", "acdc-block", 0.5, 5)


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
        ({"backbone": "resnet50"}, r"backbone: 'resnet50' is not one of conv4, resnet10, resnet18, resnet34, resnet18-cifar"),
        ({"adapt": "atom"}, r"did you mean 'atoms'"),
        ({"ways": 0}, "ways must be >= 1"),
        ({"threads": 0}, "threads must be >= 1"),
        ({"inner_lr": -1.0}, "inner_lr must be a finite number > 0"),
        ({"atom_drop": 1.0}, r"atom_drop must be in \[0, 1\)"),
        ({"inner_steps": 2.5}, "inner_steps must be int"),
        ({"first_order": "yes"}, "first_order must be bool"),
        ({"acdc": "g-block"}, "needs group_size"),
        ({"acdc": "net", "group_size": 32}, "group_size is only used with"),
        ({"acdc": "none", "adapt": "atoms"}, "adapts ACDC atoms, but conv is 'standard'"),
        ({"acdc": "nett"}, r"acdc: 'nett' is not one of none, net.*did you mean 'net'"),
        ({"recompute_inner_steps": True, "task_batching": "vmap"}, "task_batching vmap cannot batch"),
        ({"recompute_inner_steps": True, "batchnorm": "per-step"}, "running statistics twice"),
        ({"recompute_inner_steps": 1}, "recompute_inner_steps must be bool"),
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


# ---------------------------------------------------------------------------------------------
# conv: the kinds beyond ACDC (BasisConv, DCF, learnable repetition)


def test_conv_kinds_agree_with_the_factory():
    from fewshot_acdc.config import ADAPT_SCOPES, CONV_KINDS
    from fewshot_acdc.meta import SCOPES
    from fewshot_acdc.nn import CONV_KINDS as FACTORY_KINDS
    assert CONV_KINDS == FACTORY_KINDS
    assert ADAPT_SCOPES == tuple(SCOPES)


def test_conv_is_the_one_key_and_acdc_an_alias_for_the_acdc_kinds():
    config = load_config(None, {"conv": "basis", "adapt": "combination"})
    assert (config.conv, config.conv_name) == ("basis", "basis")
    assert "acdc" not in config.to_dict()
    assert load_config(None, {"acdc": "block"}) == load_config(None, {"conv": "acdc-block"})
    assert load_config(None, {"acdc": "none"}).conv == "standard"
    assert load_config(None, {"acdc": "g-net", "group_size": 8}).conv_name == "g-net"


def test_configs_saved_with_the_acdc_key_still_load(tmp_path):
    # what run directories written before `conv` was the one key hold
    saved = tmp_path / "config.yaml"
    saved.write_text("backbone: conv4\nacdc: layer\nconv: null\n")
    assert load_config(saved).conv == "acdc-layer"
    saved.write_text("backbone: conv4\nacdc: none\nconv: dcf\n")
    with pytest.raises(ConfigError, match="acdc 'none' and conv 'dcf' in config file .* name different conv kinds"):
        load_config(saved)


def test_a_later_source_naming_the_kind_replaces_the_files(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("acdc: block\n")
    assert load_config(base, {"conv": "dcf"}).conv == "dcf"
    base.write_text("conv: dcf\n")
    assert load_config(base, {"acdc": "net"}).conv == "acdc-net"


def test_replace_switches_between_conv_and_acdc():
    config = load_config(None, {"conv": "repeat-net", "adapt": "scales"})
    assert config.replace(adapt="all", acdc="layer").conv == "acdc-layer"
    assert load_config(None, {"acdc": "block"}).replace(conv="basis").conv == "basis"


def test_saved_conv_config_round_trips(tmp_path):
    config = load_config(None, {"conv": "repeat-block", "base_width": 16, "adapt": "scales+head"})
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    assert "base_width: 16" in (tmp_path / "config.yaml").read_text()
    assert not {"atoms", "rank", "bessel_atoms"} & set(config.to_dict())  # only the kind's own size is written


@pytest.mark.parametrize("conv,key", [("acdc-net", "atoms"), ("acdc-g-block", "atoms"), ("basis", "rank"),
                                      ("dcf", "bessel_atoms"), ("repeat-layer", "base_width")])
def test_each_kind_is_sized_by_its_own_key(conv, key):
    group = {"group_size": 32} if "-g-" in conv else {}
    assert load_config(None, {"conv": conv, key: 6, **group}).size == 6
    default = load_config(None, {"conv": conv, **group})
    assert default.size == getattr(default, key) == 8
    for other in {"atoms", "rank", "bessel_atoms", "base_width"} - {key}:
        with pytest.raises(ConfigError, match=f"{other} is the size of .*conv '{conv}' is sized by {key} .*give {key} instead"):
            load_config(None, {"conv": conv, other: 6, **group})


def test_plain_convolutions_have_no_size():
    assert load_config(None, {"conv": "standard"}).size is None
    with pytest.raises(ConfigError, match="conv 'standard' \\(plain convolutions\\) has no size setting: leave atoms out"):
        load_config(None, {"conv": "standard", "atoms": 8})
    with pytest.raises(ConfigError, match="rank \\(r basis filters per layer\\) must be >= 1, got 0"):
        load_config(None, {"conv": "basis", "rank": 0})


def test_a_files_size_for_its_kind_is_dropped_when_the_overrides_change_the_kind(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("conv: acdc-net\natoms: 16\n")
    assert load_config(base, {"conv": "basis"}).to_dict()["rank"] == 8  # the file's atoms sized ACDC
    assert "atoms" not in load_config(base, {"acdc": "none"}).to_dict()
    assert load_config(base, {"conv": "acdc-block"}).atoms == 16  # still the new kind's size
    assert load_config(base, {"conv": "basis", "rank": 4}).size == 4
    with pytest.raises(ConfigError, match="give rank instead"):  # the overrides' own: an error
        load_config(base, {"conv": "basis", "atoms": 4})
    base.write_text("conv: basis\natoms: 16\n")  # one source, another kind's size: an error
    with pytest.raises(ConfigError, match="conv 'basis' is sized by rank"):
        load_config(base)
    assert load_config(None, {"conv": "acdc-net", "atoms": 4}).replace(conv="dcf").size == 8


def test_saved_configs_from_before_each_kind_named_its_size_still_load(tmp_path):
    # Before, `atoms` sized every kind (standard ones included) and `acdc` named ACDC kinds.
    path = tmp_path / "config.yaml"
    path.write_text("acdc: none\nconv: basis\natoms: 12\nadapt: combination\n")
    assert load_saved_config(path).rank == 12
    path.write_text("acdc: none\nconv: null\natoms: 8\n")
    assert (load_saved_config(path).conv, load_saved_config(path).size) == ("standard", None)
    path.write_text("acdc: net\nconv: null\natoms: 4\n")
    assert load_saved_config(path, {"iterations": 7}).atoms == 4
    assert canonical_values({"conv": "repeat-net", "atoms": 32}) == {"conv": "repeat-net", "base_width": 32}
    with pytest.raises(ConfigError, match="does not exist"):
        load_saved_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "values,message",
    [
        ({"conv": "basiss"}, r"did you mean 'basis'"),
        ({"acdc": "block", "conv": "basis"}, "acdc 'block' and conv 'basis' in the overrides name different conv kinds"),
        ({"conv": "basis", "adapt": "scales"}, "adapts learnable-repetition scales, which conv kind 'basis' does not have"),
        ({"conv": "dcf", "adapt": "combination+head"}, "BasisConv's 1x1 combinations"),
        ({"conv": "repeat-net", "adapt": "atoms"}, "adapts ACDC atoms, which conv kind 'repeat-net' does not have"),
        ({"conv": "basis", "group_size": 32}, "group_size is only used with"),
    ],
)
def test_bad_conv_choices_are_config_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, values)


def test_a_recorded_config_given_as_config_reads_through_the_migration(tmp_path):
    # A run directory's config.yaml from before each kind had its size key holds `atoms: 8`
    # beside `conv: standard`; --config of it must load as resuming and the results module read it.
    run = tmp_path / "run"
    run.mkdir()
    text = "backbone: conv4\nacdc: none\nconv: standard\natoms: 8\ngroup_size: null\nways: 5\n"
    (run / "config.yaml").write_text(text)
    with pytest.raises(ConfigError, match="has no size setting"):  # not yet a run's record: a hand-written config
        load_config(run / "config.yaml")
    (run / "metrics.jsonl").write_text("")
    config = load_config(run / "config.yaml", {"iterations": 3})
    assert (config.conv, config.size, config.atoms, config.iterations) == ("standard", None, None, 3)
    assert config == load_saved_config(run / "config.yaml", {"iterations": 3})


RECORDED = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "experiments" / "results").glob("**/config.yaml"))


@pytest.mark.parametrize("path", RECORDED)
def test_every_recorded_config_loads_with_config(path):
    assert load_config(ROOT / path) == load_saved_config(ROOT / path)
