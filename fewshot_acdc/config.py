"""The one typed configuration of a MAML run: YAML file -> CLI overrides -> :class:`TrainConfig`.

Configuration flows one way. ``load_config(path, overrides)`` reads a YAML base (optional),
applies overrides (from the command line), checks every key and value, and returns a frozen
:class:`TrainConfig` that the builders consume. Unknown keys and bad values raise
:class:`ConfigError` naming them and, for a misspelt key, the closest valid name.

A setting is declared once: its :class:`TrainConfig` field, made with :func:`setting`, carries
what the rest of the toolkit derives from it (the CLI flag of run_maml.py and pretrain.py, the
choices and lower bound checked here, whether ``--resume`` may change it, whether it tells result
variants apart). Adding a setting is one field (and its test); rules that join several settings
stay as code in :func:`_validate`.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import (Any, Callable, Dict, Mapping, Optional, Tuple, Union, get_args, get_origin,
                    get_type_hints)

import yaml

from .utils import closest_name as _closest
from .vocabulary import (ACDC_SHARINGS, ADAPT_SCOPES, BACKBONES, BATCHNORM_CHOICES, CONV_KIND_TABLE, CONV_KINDS,
                         DEFAULT_CONV_SIZE, DEFAULT_INNER_STEPS, DEFAULT_INNER_STEPS_EVAL, HEAD_INITS,
                         LEARNED_STEP_SIZES, LR_SCALINGS, META_LR_SCHEDULES, OPTIMIZERS, OMNIGLOT_BACKGROUNDS, ROLE_HOLDERS, ROLES,
                         SCOPE_TABLE, SIZE_KEYS, check_role_learning_rates, conv_for_acdc, conv_kind, conv_size,
                         kinds_sized_by)

# The `--acdc` alias's values (kept for the CLI and for configs saved before `conv` was the one key).
ACDC_KINDS = ACDC_SHARINGS
DATASETS = ("builtin", "miniimagenet", "omniglot")
DEVICES = ("auto", "cpu", "cuda")
TASK_BATCHING = ("sequential", "vmap")

#: The flag groups of run_maml.py and pretrain.py (fewshot_acdc.cli.train names their titles).
FLAG_GROUPS = ("model", "MAML", "pretraining", "episodes", "run")
_SETTING = "fewshot_acdc.setting"  # the field-metadata key that holds a field's Setting


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Setting:
    """What a :class:`TrainConfig` field declares beside its type and default. The parser, the
    validation tables, the resume whitelist and the results' variant list read it here, so that
    none of them is a second list to keep in step with the fields."""

    group: str                          # the CLI flag group (FLAG_GROUPS)
    help: Optional[str] = None          # the flag's help
    choices: Optional[Tuple[str, ...]] = None  # the valid values (checked here and by the parser)
    minimum: Optional[int] = None       # the least valid value (an Optional field may also be null)
    resumable: bool = False             # --resume may change it (fewshot_acdc.runs.resume: it only steers
                                        # how the run continues; anything else defines the run)
    variant: bool = False               # runs of one results row that differ in it are an ablation, each its
                                        # own row (fewshot_acdc.results.table.VARIANT_SETTINGS)
    flag: bool = True                   # has a flag --<name-with-dashes> (False: YAML only)
    metavar: Optional[str] = None
    parse: Optional[Callable[[str], Any]] = None  # the flag's type when the annotation does not say
                                        # (bool: a flag that sets True; Optional[X]: X)


def setting(default: Any, *, group: str, help: Optional[str] = None, choices: Optional[Tuple[str, ...]] = None,
            minimum: Optional[int] = None, resumable: bool = False, variant: bool = False, flag: bool = True,
            metavar: Optional[str] = None, parse: Optional[Callable[[str], Any]] = None) -> Any:
    """A :class:`TrainConfig` field with ``default`` and its :class:`Setting` (see there)."""
    if group not in FLAG_GROUPS:
        raise ValueError(f"setting group {group!r} is not one of {', '.join(FLAG_GROUPS)}{_closest(group, FLAG_GROUPS)}")
    declared = Setting(group=group, help=help, choices=choices, minimum=minimum, resumable=resumable,
                       variant=variant, flag=flag, metavar=metavar, parse=parse)
    return dataclasses.field(default=default, metadata={_SETTING: declared})


def parse_inner_lr(text: str):
    """``0.01`` -> 0.01; ``atoms=1e-4,head=0.1`` -> {"atoms": 1e-4, "head": 0.1} (roles checked by the config)."""
    import argparse
    try:
        if "=" not in text:
            return float(text)
        pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
        return {role.strip(): float(value) for role, value in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a number nor ROLE=LR pairs separated by commas (e.g. atoms=1e-4,head=0.1)") from None


def _size_help(key: str) -> str:
    """The help of a conv kind's size flag (--atoms, --rank...): the kinds it sizes and what it counts."""
    knob = next(k.size_knob for k in CONV_KIND_TABLE.values() if k.size_key == key)
    return f"{kinds_sized_by(key)}: {knob.split(' and ')[0]} (default {DEFAULT_CONV_SIZE})"


@dataclass(frozen=True)
class TrainConfig:
    # Model
    backbone: str = setting("resnet18", group="model", choices=BACKBONES)
    conv: str = setting("acdc-net", group="model", choices=CONV_KINDS,
                        help="conv kind (instead of --acdc): standard, acdc-*, basis (BasisConv), dcf (fixed "
                             "Fourier-Bessel atoms), repeat-net/-block/-layer (learnable repetition)")
                                      # conv kind: standard | acdc-net | acdc-block | acdc-layer | acdc-g-* |
                                      # basis | dcf | repeat-net | repeat-block | repeat-layer (fewshot_acdc.vocabulary).
                                      # `acdc: net` (the --acdc alias, older configs) means conv: acdc-net
    # The conv kind's size, each kind's under its own name (give the one of `conv`; 8 when not given,
    # fewshot_acdc.vocabulary.DEFAULT_CONV_SIZE). TrainConfig.size is the one that applies. (Their
    # bounds are the kind's: _validate.)
    atoms: Optional[int] = setting(None, group="model", metavar="N", help=_size_help("atoms"))
                                      # ACDC: dictionary atoms m per layer (per group when grouped)
    rank: Optional[int] = setting(None, group="model", metavar="N", help=_size_help("rank"))
                                      # basis: BasisConv's rank r (basis filters per layer)
    bessel_atoms: Optional[int] = setting(None, group="model", metavar="N", help=_size_help("bessel_atoms"))
                                      # dcf: Fourier-Bessel atoms K per layer
    base_width: Optional[int] = setting(None, group="model", metavar="N", help=_size_help("base_width"))
                                      # repeat-*: learnable repetition's base width b
    group_size: Optional[int] = setting(None, group="model",
                                        help="channels per group (s), for g-net/g-block/g-layer")
                                      # channels per group s, only for g-net / g-block / g-layer
    atom_drop: float = setting(0.1, group="model", variant=True, help="atom-drop probability p in [0, 1)")
                                      # the paper's atom-drop rate; 0 turns it off
    # MAML
    adapt: str = setting("all", group="MAML", choices=ADAPT_SCOPES, help="parameters adapted in the inner loop")
                                      # inner-loop scope: all | atoms | head | atoms+head | coefficients |
                                      # combination | scales (and each +head)
    inner_steps: int = setting(DEFAULT_INNER_STEPS, group="MAML", minimum=1, resumable=True, variant=True)
                                      # 5 (fewshot_acdc.vocabulary, shared with MAML)
    inner_steps_eval: int = setting(DEFAULT_INNER_STEPS_EVAL, group="MAML", minimum=0, resumable=True, variant=True)
                                      # 10
    inner_lr: Union[float, Dict[str, float]] = setting(
        0.01, group="MAML", resumable=True, variant=True, parse=parse_inner_lr, metavar="LR|ROLE=LR,...",
        help="inner-loop step size: one number for every parameter, or per role, e.g. "
             "atoms=1e-4,head=0.1,default=0.01 (roles: " + ", ".join(ROLES) + ")")
                                      # one step size for every parameter, or one per role:
                                      # {atoms: 1e-4, head: 0.1, default: 0.01} (roles: fewshot_acdc.vocabulary.ROLES;
                                      # default: every role not named). Initial values when learn_inner_lr is set
    learn_inner_lr: str = setting("none", group="MAML", choices=LEARNED_STEP_SIZES, variant=True,
                                  help="meta-learn the step sizes: lslr (per tensor and step, MAML++), meta-sgd "
                                       "(per element)")
                                      # none | lslr (per tensor and inner step, MAML++) | meta-sgd (per element)
    multi_step_anneal: Optional[int] = setting(None, group="MAML", minimum=1, variant=True, metavar="ITERATIONS",
                                               help="MAML++ multi-step loss, annealed to the last inner step over "
                                                    "ITERATIONS")
                                      # MAML++ multi-step loss: the query loss after every inner step,
                                      # annealed to the last step over this many iterations (null: off)
    first_order: bool = setting(False, group="MAML", resumable=True, help="first-order MAML")
    recompute_inner_steps: bool = setting(
        False, group="MAML", resumable=True, variant=True,
        help="second order in bounded memory: recompute each inner step in the backward pass instead of keeping "
             "its graph (same meta-gradient; more time, far less memory at large images or many inner steps)")
                                      # second order in bounded memory: each inner step keeps no graph and is
                                      # recomputed in the backward pass (the same meta-gradient, one more forward
                                      # and backward of the support set per step; README, docs/performance.md)
    batchnorm: str = setting("transductive", group="MAML", choices=BATCHNORM_CHOICES, variant=True,
                             help="transductive (batch statistics everywhere) or per-step (MAML++: BN weights and "
                                  "running statistics per inner step, used at test time)")
                                      # transductive: batch statistics everywhere (reference MAML) | per-step:
                                      # MAML++ BN weights and running statistics per inner step, used at test time
    head_init: str = setting("per-class", group="MAML", choices=HEAD_INITS,
                             help="per-class (MAML's learned row per class) or shared (UNICORN-MAML: one learned "
                                  "row copied to every class when a task starts)")
                                      # per-class: MAML's learned row per class | shared: one learned row copied to
                                      # every class at the start of each task (UNICORN-MAML; needs a scope that adapts the head)
    meta_lr: float = setting(1e-3, group="MAML", resumable=True, variant=True)
    meta_lr_schedule: str = setting("constant", group="MAML", choices=META_LR_SCHEDULES, variant=True)
                                      # constant | cosine (annealed to meta_lr_min over the run's iterations)
    meta_lr_min: float = setting(0.0, group="MAML", variant=True, help="cosine schedule's final meta learning rate")
    meta_optimizer: str = setting("adam", group="MAML", choices=OPTIMIZERS, variant=True,
                                  help="outer-loop optimiser (sgd: Nesterov momentum)")
                                      # adam | adamw | sgd (Nesterov momentum): the outer loop's optimiser
    weight_decay: float = setting(0.0, group="MAML", minimum=0, variant=True,
                                  help="outer optimiser's weight decay (AdamW: decoupled)")
                                      # the outer optimiser's (AdamW: decoupled; Adam, SGD: L2)
    momentum: float = setting(0.9, group="MAML", help="SGD's Nesterov momentum (outer loop and pretraining)")
                                      # SGD's Nesterov momentum, in the outer loop and in pretraining
    lr_scaling: str = setting("none", group="MAML", choices=LR_SCALINGS, variant=True,
                              help="kernel: under Adam/AdamW, ACDC coefficients learn at the rate of the kernel "
                                   "they compose (x gamma; fewshot_acdc.nn.scaling); SGD and the inner loop keep "
                                   "their rates")
                                      # none | kernel: under Adam/AdamW (outer loop, pretraining) ACDC coefficients
                                      # learn as if stored at the scale of the kernel they compose (x gamma;
                                      # fewshot_acdc.nn.scaling); SGD and the inner loop keep their rates
    init: Optional[str] = setting(None, group="MAML", variant=True, metavar="PRETRAIN_RUN",
                                  help="start from a pretraining run directory (its best.pt) or checkpoint "
                                       "(pretrain.py); the N-way head starts at zero")
                                      # start from a pretraining run directory or checkpoint (pretrain.py): every
                                      # weight but the classifier, which starts at zero (N ways, not the
                                      # pretraining classes)
    meta_batch: int = setting(4, group="MAML", minimum=1, variant=True, help="tasks per meta-step")
    grad_clip: Optional[float] = setting(None, group="MAML", resumable=True, variant=True,
                                         help="clip the meta-gradient's global norm")
    task_batching: str = setting("sequential", group="MAML", choices=TASK_BATCHING, resumable=True, variant=True)
    iterations: int = setting(10000, group="MAML", resumable=True, variant=True,
                              help="meta-steps (with --plateau-validations: the most)")
                                      # meta-steps (each of meta_batch tasks); with plateau_validations, the cap
                                      # (its bound depends on init: _validate)
    plateau_validations: Optional[int] = setting(
        None, group="MAML", minimum=1, resumable=True, variant=True, metavar="N",
        help="stop once none of the last N validations beats the best earlier one by more than its 95%% CI")
                                      # stop once none of the last N validations beats the best earlier
                                      # one by more than its 95% CI (trained to a plateau; null: run all iterations)
    # Episodes
    ways: int = setting(5, group="episodes", minimum=1)  # (>= 2: _validate)
    shots: int = setting(1, group="episodes", minimum=1)
    queries: int = setting(16, group="episodes", minimum=1, variant=True, help="queries per class in meta-training")
                                      # per class in meta-training
    queries_eval: int = setting(15, group="episodes", minimum=1, help="queries per class in validation/test")
                                      # per class in validation and test episodes
    # Data
    dataset: str = setting("miniimagenet", group="episodes", choices=DATASETS)
    data_root: Optional[str] = setting(None, group="episodes", resumable=True)
                                      # None: $FEWSHOT_DATA, else ./data (and their <dataset>/ sub-folders)
    image_size: int = setting(84, group="episodes", minimum=1, variant=True)
    augment: bool = setting(False, group="episodes", variant=True, help="training-time augmentation")
    rotations: bool = setting(True, group="episodes", variant=True, flag=False)
                                      # Omniglot only: 90/180/270 degree rotations as new classes (no flag: a
                                      # flag that sets True could not turn the default off)
    omniglot_background: str = setting(
        "all", group="episodes", choices=OMNIGLOT_BACKGROUNDS, variant=True,
        help="Omniglot: every background set found (all), or one of Lake's minimal sets alone (its test is the "
             "all_runs benchmark)")
                                      # Omniglot only: all (every set found) | small1 | small2 (Lake's minimal
                                      # sets alone: one alphabet held out for validation, all_runs is the test)
    num_workers: int = setting(0, group="episodes", minimum=0, resumable=True)
    episode_dir: Optional[str] = setting(None, group="episodes", resumable=True,
                                         help="where fixed validation/test episode sets are saved")
                                      # where fixed val/test episode sets are saved (None: data's cache dir)
    # Supervised pretraining (pretrain.py): a linear classifier over every training class. Defaults
    # are RFS's (Tian et al. 2020) recipe, which in this toolkit's Omniglot probe trained standard and
    # ACDC networks alike (experiments/results/README.md); Adam at 1e-3 did not train ACDC-net.
    pretrain_optimizer: str = setting("sgd", group="pretraining", choices=OPTIMIZERS)
                                      # adam | adamw | sgd (Nesterov momentum: `momentum`)
    pretrain_lr: float = setting(0.05, group="pretraining")
    pretrain_weight_decay: float = setting(5e-4, group="pretraining", minimum=0)
    pretrain_schedule: str = setting("cosine", group="pretraining", choices=META_LR_SCHEDULES)
                                      # constant | cosine (to 0 over the epochs, stepped per batch)
    pretrain_epochs: int = setting(15, group="pretraining", minimum=1)
    pretrain_batch: int = setting(64, group="pretraining", minimum=1, help="images per batch")
    pretrain_holdout: int = setting(5, group="pretraining", minimum=0, help="images of each training class held out")
                                      # images of each training class held out to measure generalisation
    # Schedule and bookkeeping
    log_every: int = setting(100, group="run", minimum=1, resumable=True)
    val_every: int = setting(500, group="run", minimum=1, resumable=True)
    val_episodes: int = setting(100, group="run", minimum=1)
    test_episodes: int = setting(600, group="run", minimum=1, resumable=True)
    eval_batch: Optional[int] = setting(
        None, group="run", minimum=1, resumable=True, metavar="EPISODES",
        help="validation/test episodes adapted together with torch.func.vmap (1: one at a time; default: 1 on a "
             "CPU, a memory-bounded stack on a GPU)")
                                      # evaluation episodes adapted together (torch.func.vmap); 1: one at a
                                      # time; null: 1 on a CPU (batching measured slower there), a
                                      # memory-bounded stack of up to 16 on a GPU (fewshot_acdc.meta.batching)
    tensorboard: bool = setting(False, group="run", resumable=True,
                                help="also log the metrics to RUN_DIR/tensorboard (needs the tensorboard package)")
                                      # also write metrics.jsonl's numbers to <run>/tensorboard (needs the
                                      # optional tensorboard package)
    device: str = setting("auto", group="run", choices=DEVICES, resumable=True)
    threads: Optional[int] = setting(None, group="run", minimum=1, resumable=True,
                                     help="CPU threads for torch (default: one per core)")
                                      # CPU threads for torch; None: torch's default (one per core).
                                      # On a CPU shared with other jobs, 1 can be several times faster.
    seed: int = setting(0, group="run", minimum=0)

    def __post_init__(self) -> None:
        kind = conv_kind(self.conv) if self.conv in CONV_KINDS else None
        if kind is not None and kind.size_key is not None and getattr(self, kind.size_key) is None:
            object.__setattr__(self, kind.size_key, DEFAULT_CONV_SIZE)  # the kind's size, filled in once
        _validate(self)

    @property
    def size(self) -> Optional[int]:
        """The conv kind's size (ACDC atoms m, BasisConv rank r, DCF Fourier-Bessel atoms K,
        repetition base width b: the field :attr:`ConvKind.size_key` names); None for standard."""
        key = conv_kind(self.conv).size_key
        return None if key is None else getattr(self, key)

    @property
    def conv_name(self) -> str:
        """Short name for run directories: the ACDC sharing scope (``net``, ``g-block``...),
        ``none`` for standard convolutions, else the kind."""
        kind = conv_kind(self.conv)
        return kind.acdc_sharing if kind.is_acdc or kind.family == "standard" else kind.name

    def to_dict(self) -> Dict[str, Any]:
        """Every field, but of the size settings only the conv kind's own (the others are unset)."""
        return {key: value for key, value in dataclasses.asdict(self).items()
                if not (key in SIZE_KEYS and value is None)}

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes``; a change of conv kind drops a size the new kind does not take."""
        return _build(self.to_dict(), changes, "the config")


CONFIG_KEYS = tuple(f.name for f in fields(TrainConfig))


@functools.lru_cache(maxsize=None)
def settings(config_class: type = TrainConfig) -> Mapping[str, Setting]:
    """Each field of ``config_class`` (TrainConfig, or a subclass that adds settings) -> its
    :class:`Setting`, in field order. A field declared without :func:`setting` is an error naming it."""
    declared = {}
    for field in fields(config_class):
        if _SETTING not in field.metadata:
            raise TypeError(f"{config_class.__name__}.{field.name} is not declared with setting(): give its flag "
                            f"group and whether --resume may change it (fewshot_acdc.config.setting)")
        declared[field.name] = field.metadata[_SETTING]
    return MappingProxyType(declared)


#: Keys a resume may change (fewshot_acdc.runs.resume): a setting is refused until its field says resumable=True.
RESUMABLE_KEYS = tuple(key for key, declared in settings().items() if declared.resumable)
#: Keys whose values tell result variants apart (fewshot_acdc.results.table.VARIANT_SETTINGS).
VARIANT_KEYS = tuple(key for key, declared in settings().items() if declared.variant)
#: Keys with a flag of their own (fewshot_acdc.cli.train adds one per key, in its group).
FLAGGED_KEYS = tuple(key for key, declared in settings().items() if declared.flag)


@functools.lru_cache(maxsize=None)
def _tables(config_class: type) -> Tuple[Dict[str, Tuple[str, ...]], Tuple[str, ...], Tuple[str, ...]]:
    """The per-field checks of ``config_class``: {key: choices}, the keys >= 1, the keys >= 0."""
    declared = settings(config_class)
    choices = {key: s.choices for key, s in declared.items() if s.choices is not None}
    bounds = {key: s.minimum for key, s in declared.items() if s.minimum is not None}
    unknown = {key: bound for key, bound in bounds.items() if bound not in (0, 1)}
    if unknown:
        raise TypeError(f"setting minimum must be 0 or 1 (other bounds are rules in _validate), got {unknown}")
    return (choices, tuple(key for key, bound in bounds.items() if bound == 1),
            tuple(key for key, bound in bounds.items() if bound == 0))


_CHOICES, _POSITIVE, _NON_NEGATIVE = _tables(TrainConfig)


def _below(config: TrainConfig, key: str, minimum: int) -> None:
    """ConfigError if ``key``'s value is below ``minimum`` (a null one of an Optional field is not)."""
    value = getattr(config, key)
    if value is not None and value < minimum:
        optional = type(None) in get_args(get_type_hints(type(config))[key])
        raise ConfigError(f"{key} must be >= {minimum}{' or null' if optional else ''}, got {value}")


def _validate(config: TrainConfig) -> None:
    choice_table, positive, non_negative = _tables(type(config))  # the fields' own (Setting) checks first
    for key, choices in choice_table.items():
        value = getattr(config, key)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}{_closest(value, choices)}")
    for key in positive:
        _below(config, key, 1)
    if config.iterations < (0 if config.init is not None else 1):
        raise ConfigError(f"iterations must be >= 1 (>= 0 with init: 0 scores the pretrained backbone with no "
                          f"meta-training), got {config.iterations}")
    kind = conv_kind(config.conv)
    try:
        conv_size(kind, {key: getattr(config, key) for key in SIZE_KEYS})
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if config.size is not None and config.size < 1:
        raise ConfigError(f"{kind.size_key} ({kind.size_knob}) must be >= 1, got {config.size}")
    for key in non_negative:
        _below(config, key, 0)
    if config.ways < 2:  # every query would carry the one label: 100% whatever the model
        raise ConfigError(f"ways must be >= 2 (a 1-way episode is scored 100% by any model), got {config.ways}")
    if not 0.0 <= config.atom_drop < 1.0:
        raise ConfigError(f"atom_drop must be in [0, 1), got {config.atom_drop}")
    try:
        check_role_learning_rates(config.inner_lr)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if not config.meta_lr > 0:
        raise ConfigError(f"meta_lr must be > 0, got {config.meta_lr}")
    if not config.pretrain_lr > 0:
        raise ConfigError(f"pretrain_lr must be > 0, got {config.pretrain_lr}")
    if not 0.0 <= config.momentum < 1.0:
        raise ConfigError(f"momentum must be in [0, 1), got {config.momentum}")
    if not 0 <= config.meta_lr_min < config.meta_lr:
        raise ConfigError(f"meta_lr_min must be >= 0 and below meta_lr ({config.meta_lr}), got {config.meta_lr_min}")
    if config.grad_clip is not None and not config.grad_clip > 0:
        raise ConfigError(f"grad_clip must be > 0 or null, got {config.grad_clip}")
    if config.recompute_inner_steps and config.task_batching == "vmap":
        raise ConfigError("recompute_inner_steps runs each inner step as a custom autograd function, which "
                          "task_batching vmap cannot batch; use task_batching sequential")
    if config.recompute_inner_steps and config.batchnorm == "per-step":
        raise ConfigError("recompute_inner_steps would update per-step BatchNorm's running statistics twice per "
                          "inner step (the step and its recomputation); use batchnorm transductive or leave "
                          "recompute_inner_steps off")
    if config.head_init == "shared" and not SCOPE_TABLE[config.adapt].adapts_head:
        raise ConfigError(f"head_init 'shared' starts every class from the same row, which only the inner loop "
                          f"can tell apart, but adapt {config.adapt!r} leaves the head fixed; use adapt "
                          f"{config.adapt}+head (or all), or head_init per-class")
    if kind.grouped and config.group_size is None:
        raise ConfigError(f"conv {kind.name!r} needs group_size (channels per group, e.g. 32 or 64)")
    if not kind.grouped and config.group_size is not None:
        raise ConfigError(f"group_size is only used with conv acdc-g-net, acdc-g-block or acdc-g-layer, not {kind.name!r}")
    missing = sorted(SCOPE_TABLE[config.adapt].missing_roles(kind))
    if missing:
        what = " and ".join(ROLE_HOLDERS[role][0] for role in missing)
        if kind.family == "standard":
            raise ConfigError(f"adapt {config.adapt!r} adapts {what}, but conv is 'standard' (plain convolutions)")
        raise ConfigError(f"adapt {config.adapt!r} adapts {what}, which conv kind {kind.name!r} does not have")


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against the field's type; ints are accepted for floats, nothing else is."""
    if annotation == Union[float, Dict[str, float]]:  # inner_lr: a number or {role: number}
        if isinstance(value, Mapping):
            if all(isinstance(role, str) and isinstance(lr, (int, float)) and not isinstance(lr, bool)
                   for role, lr in value.items()):
                return {role: float(lr) for role, lr in value.items()}
            raise ConfigError(f"{key} must map parameter roles to numbers, got {value!r}")
        return _coerce(key, value, float)
    optional = get_origin(annotation) is Union and type(None) in get_args(annotation)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} may not be null")
    base = next(a for a in get_args(annotation) if a is not type(None)) if optional else annotation
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif base is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key} must be {base.__name__}{' or null' if optional else ''}, got {value!r}")


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, again: int) -> None:
        where = f"on line {first}" if first == again else f"lines {first} and {again}"
        super().__init__(f"key {key!r} is given twice ({where}); keep one of them")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: PyYAML keeps the last silently,
    so of two values the one a reader sees first would not be the one used."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            lines: Dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # "<<: *base" entries may be overridden: that is what they are for
                key, line = self.construct_object(key_node, deep=deep), key_node.start_mark.line + 1
                try:
                    if key in lines:
                        raise _DuplicateKey(key, lines[key], line)
                    lines[key] = line
                except TypeError:
                    continue  # an unhashable key: SafeLoader's own error names it
        return super().construct_mapping(node, deep=deep)


def load_config(path: Optional[Union[str, Path]] = None, overrides: Optional[Mapping[str, Any]] = None) -> TrainConfig:
    """YAML base (optional) + overrides -> a validated :class:`TrainConfig`."""
    values: Dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (see configs/ for the provided ones)")
        try:
            loaded = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
        except _DuplicateKey as error:
            raise ConfigError(f"config file {path}: {error}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys to values")
        if is_recorded_config(path):
            # A run's record, written by an older version maybe: read through the one migration,
            # as resuming and the results module read it.
            loaded = canonical_values(loaded)
        values.update(loaded)
    return _build(values, overrides or {}, f"config file {path}" if path is not None else "the values")


#: Files that only a run directory holds beside its config.yaml.
RUN_RECORD_FILES = ("metrics.jsonl", "summary.json", "provenance.jsonl")


def is_recorded_config(path: Union[str, Path]) -> bool:
    """Whether ``path`` is a run directory's saved ``config.yaml`` (a record, not a hand-written
    config): its name, with the files training writes beside it."""
    path = Path(path)
    return path.name == "config.yaml" and any((path.parent / name).is_file() for name in RUN_RECORD_FILES)


def load_saved_config(path: Union[str, Path], overrides: Optional[Mapping[str, Any]] = None) -> TrainConfig:
    """A run's saved ``config.yaml`` (any version of it, see :func:`canonical_values`) + overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: not a run directory's config")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"saved config {path} is not valid YAML: {error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"saved config {path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise ConfigError(f"saved config {path} cannot be read: {error.strerror or error}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"saved config {path} must hold a mapping of keys to values")
    return _build(canonical_values(loaded), overrides or {}, f"saved config {path}")


def config_from_values(values: Mapping[str, Any], overrides: Optional[Mapping[str, Any]] = None,
                       where: str = "the saved config") -> TrainConfig:
    """A saved config mapping (a checkpoint's ``config``; any version, see :func:`canonical_values`)
    + overrides."""
    return _build(canonical_values(values), overrides or {}, where)


def _build(base: Mapping[str, Any], overrides: Mapping[str, Any], where: str) -> TrainConfig:
    """``base`` (a file's values) with ``overrides`` on top -> a validated config.

    acdc (an alias) and conv both name the conv kind: each source is read in conv terms, then the
    overrides replace what the base said. When the overrides name the conv kind, a size setting
    of the base that the new kind does not take is dropped (it sized the base's kind: a grid's
    file may give ``atoms`` for cells that override ``conv`` to ``basis``); one that the same
    source gives for another kind is an error.
    """
    base = _conv_from_alias(dict(base), where)
    overrides = _conv_from_alias(dict(overrides), "the overrides")
    if "conv" in overrides and overrides["conv"] in CONV_KINDS:
        own = conv_kind(overrides["conv"]).size_key
        base = {key: value for key, value in base.items() if key not in SIZE_KEYS or key == own}
    values = {**base, **overrides}
    unknown = [key for key in values if key not in CONFIG_KEYS]
    if unknown:
        place = f" in {where}" if where.startswith(("config file", "saved config")) else ""
        raise ConfigError("; ".join(f"unknown config key {key!r}{place}{_closest(key, CONFIG_KEYS)}" for key in unknown))
    hints = get_type_hints(TrainConfig)
    return TrainConfig(**{key: _coerce(key, value, hints[key]) for key, value in values.items()})


def _conv_from_alias(values: Dict[str, Any], source: str) -> Dict[str, Any]:
    """``values`` with the ``acdc`` alias (``--acdc net``; configs saved before ``conv`` was the one
    key, which hold ``acdc: net`` and ``conv: null``) turned into ``conv``. One source naming the
    kind both ways must name the same kind."""
    values = dict(values)
    if values.get("conv", "") is None:
        del values["conv"]
    if "acdc" not in values:
        return values
    acdc = values.pop("acdc")
    if not isinstance(acdc, str) or acdc not in ACDC_SHARINGS:
        raise ConfigError(f"acdc: {acdc!r} is not one of {', '.join(ACDC_SHARINGS)}{_closest(str(acdc), ACDC_SHARINGS)}"
                          " (acdc names an ACDC sharing scope; conv names any kind)")
    implied = conv_for_acdc(acdc)
    if "conv" in values and values["conv"] != implied:
        raise ConfigError(f"acdc {acdc!r} and conv {values['conv']!r} in {source} name different conv kinds; "
                          f"give one of them (conv names any kind, acdc only the ACDC sharing scopes)")
    values["conv"] = implied
    return values


def canonical_values(values: Mapping[str, Any]) -> Dict[str, Any]:
    """A saved config mapping (a run's config.yaml, a checkpoint's) in today's keys: ``acdc``
    turned into ``conv`` (and dropped as ``none`` beside a non-ACDC ``conv``, as configs that
    held both keys wrote it); ``atoms``, which sized every kind before each had its own name, moved
    to the kind's size key (``rank``, ``bessel_atoms``, ``base_width``), or dropped for
    standard convolutions (where it meant nothing)."""
    values = dict(values)
    if values.get("acdc") == "none" and values.get("conv") not in (None, "standard"):
        del values["acdc"]  # configs that held both keys wrote `acdc: none` beside a non-ACDC conv
    values = _conv_from_alias(values, "the saved config")
    kind = CONV_KIND_TABLE.get(values.get("conv", TrainConfig.conv))
    if kind is not None and kind.size_key != "atoms" and "atoms" in values:
        atoms = values.pop("atoms")
        if kind.size_key is not None and values.get(kind.size_key) is None:
            values[kind.size_key] = atoms
    return values


def save_config(config: TrainConfig, path: Union[str, Path]) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
