"""A setting is declared once: its TrainConfig field (fewshot_acdc.config.setting) drives the CLI
flag, the validation, the resume whitelist and the results' variant list."""
import dataclasses
from dataclasses import dataclass
from typing import Optional

import pytest

from fewshot_acdc.cli import train as train_cli
from fewshot_acdc.cli.common import ArgumentParser, add_setting_flags
from fewshot_acdc.config import (CONFIG_KEYS, FLAG_GROUPS, ConfigError, Setting, TrainConfig, _tables, setting,
                                 settings)
from fewshot_acdc.results.table import VARIANT_SETTINGS
from fewshot_acdc.runs.resume import RESUMABLE


def _declared(what):
    return tuple(key for key, declared in settings().items() if getattr(declared, what))


def test_every_field_is_declared_with_setting():
    assert tuple(settings()) == CONFIG_KEYS
    assert all(isinstance(declared, Setting) and declared.group in FLAG_GROUPS for declared in settings().values())


def test_the_derived_lists_are_the_declarations():
    assert RESUMABLE == _declared("resumable")
    assert VARIANT_SETTINGS == _declared("variant")
    assert train_cli.FLAG_KEYS == ("acdc",) + _declared("flag")
    choices, positive, non_negative = _tables(TrainConfig)
    assert choices == {key: d.choices for key, d in settings().items() if d.choices is not None}
    assert positive == tuple(key for key, d in settings().items() if d.minimum == 1)
    assert non_negative == tuple(key for key, d in settings().items() if d.minimum == 0)
    assert tuple(train_cli.GROUP_TITLES) == FLAG_GROUPS


def test_every_config_flag_of_the_parser_is_a_declared_field_in_its_group():
    parser = train_cli.build_parser()
    seen = {}
    for group in parser._action_groups:
        for action in group._group_actions:
            if action.dest in CONFIG_KEYS:
                seen[action.dest] = (group.title, action.option_strings)
    # --acdc is conv's alias (config.py reads it); every other flag of a config key is the field's own
    assert set(seen) == set(_declared("flag"))
    for key, (title, flags) in seen.items():
        assert flags == ["--" + key.replace("_", "-")]
        assert title == train_cli.GROUP_TITLES[settings()[key].group]
    # what is neither a setting nor the alias is written by hand (--config, --out, --resume, ...)
    assert "acdc" not in CONFIG_KEYS and "acdc" in {a.dest for a in parser._actions}


def test_flags_take_the_field_type():
    parse = train_cli.build_parser().parse_args
    args = parse(["--inner-steps", "3", "--meta-lr", "0.5", "--first-order", "--inner-lr", "atoms=1e-4,head=0.1",
                  "--grad-clip", "2", "--init", "runs/pre", "--conv", "basis", "--rank", "4"])
    assert (args.inner_steps, args.meta_lr, args.first_order, args.grad_clip) == (3, 0.5, True, 2.0)
    assert args.inner_lr == {"atoms": 1e-4, "head": 0.1} and (args.init, args.conv, args.rank) == ("runs/pre", "basis", 4)
    assert parse([]).first_order is None  # absent: the config decides
    assert not hasattr(parse([]), "rotations")  # flag=False: YAML only


@dataclass(frozen=True)
class _Extended(TrainConfig):
    """TrainConfig plus one setting, declared the way a new field would be."""
    probe_steps: Optional[int] = setting(None, group="MAML", minimum=1, resumable=True, variant=True,
                                         metavar="N", help="a new setting")
    probe_kind: str = setting("a", group="run", choices=("a", "b"))


def test_a_new_field_with_its_metadata_is_enough():
    declared = settings(_Extended)
    assert declared["probe_steps"].resumable and declared["probe_steps"].variant
    assert not declared["probe_kind"].resumable and not declared["probe_kind"].variant
    # the parser: its flags in their groups, with their types
    parser = ArgumentParser(prog="probe")
    assert add_setting_flags(parser, "MAML", _Extended)[-1] == "probe_steps"
    assert add_setting_flags(parser, "run", _Extended)[-1] == "probe_kind"
    args = parser.parse_args(["--probe-steps", "3", "--probe-kind", "b"])
    assert (args.probe_steps, args.probe_kind) == (3, "b")
    with pytest.raises(SystemExit):
        parser.parse_args(["--probe-kind", "c"])
    # the validation: its bound and its choices
    assert _Extended(probe_steps=2).probe_steps == 2 and _Extended().probe_steps is None
    with pytest.raises(ConfigError, match=r"probe_steps must be >= 1 or null, got 0"):
        _Extended(probe_steps=0)
    with pytest.raises(ConfigError, match=r"probe_kind: 'c' is not one of a, b"):
        _Extended(probe_kind="c")


def test_a_field_without_setting_is_named():
    @dataclass(frozen=True)
    class Bare(TrainConfig):
        bare: int = 3
    with pytest.raises(TypeError, match=r"Bare.bare is not declared with setting\(\)"):
        settings(Bare)


def test_a_setting_group_must_be_a_flag_group():
    with pytest.raises(ValueError, match=r"setting group 'episode' is not one of .*did you mean 'episodes'"):
        setting(1, group="episode")


def test_optional_bounds_say_null_is_allowed():
    with pytest.raises(ConfigError, match=r"eval_batch must be >= 1 or null, got 0"):
        TrainConfig(eval_batch=0)
    with pytest.raises(ConfigError, match=r"^seed must be >= 0, got -1$"):
        TrainConfig(seed=-1)
    assert dataclasses.replace(TrainConfig(), eval_batch=None).eval_batch is None
