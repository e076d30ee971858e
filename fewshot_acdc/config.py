"""The one typed configuration of a MAML run: YAML file -> CLI overrides -> :class:`TrainConfig`.

Configuration flows one way. ``load_config(path, overrides)`` reads a YAML base (optional),
applies overrides (from the command line), checks every key and value, and returns a frozen
:class:`TrainConfig` that the builders consume. Unknown keys and bad values raise
:class:`ConfigError` naming them and, for a misspelt key, the closest valid name.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union, get_args, get_origin, get_type_hints

import yaml

from .utils import closest_name as _closest
from .vocabulary import (ACDC_SHARINGS, ADAPT_SCOPES, BACKBONES, BATCHNORM_CHOICES, CONV_KIND_TABLE, CONV_KINDS,
                         DEFAULT_CONV_SIZE, DEFAULT_INNER_STEPS, DEFAULT_INNER_STEPS_EVAL, HEAD_INITS,
                         LEARNED_STEP_SIZES, LR_SCALINGS, META_LR_SCHEDULES, OPTIMIZERS, OMNIGLOT_BACKGROUNDS, ROLE_HOLDERS, SCOPE_TABLE,
                         SIZE_KEYS, check_role_learning_rates, conv_for_acdc, conv_kind, conv_size)

# The `--acdc` alias's values (kept for the CLI and for configs saved before `conv` was the one key).
ACDC_KINDS = ACDC_SHARINGS
DATASETS = ("builtin", "miniimagenet", "omniglot")
DEVICES = ("auto", "cpu", "cuda")
TASK_BATCHING = ("sequential", "vmap")


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class TrainConfig:
    # Model
    backbone: str = "resnet18"
    conv: str = "acdc-net"            # conv kind: standard | acdc-net | acdc-block | acdc-layer | acdc-g-* |
                                      # basis | dcf | repeat-net | repeat-block | repeat-layer (fewshot_acdc.vocabulary).
                                      # `acdc: net` (the --acdc alias, older configs) means conv: acdc-net
    # The conv kind's size, each kind's under its own name (give the one of `conv`; 8 when not given,
    # fewshot_acdc.vocabulary.DEFAULT_CONV_SIZE). TrainConfig.size is the one that applies.
    atoms: Optional[int] = None       # ACDC: dictionary atoms m per layer (per group when grouped)
    rank: Optional[int] = None        # basis: BasisConv's rank r (basis filters per layer)
    bessel_atoms: Optional[int] = None  # dcf: Fourier-Bessel atoms K per layer
    base_width: Optional[int] = None  # repeat-*: learnable repetition's base width b
    group_size: Optional[int] = None  # channels per group s, only for g-net / g-block / g-layer
    atom_drop: float = 0.1            # the paper's atom-drop rate; 0 turns it off
    # MAML
    adapt: str = "all"                # inner-loop scope: all | atoms | head | atoms+head | coefficients |
                                      # combination | scales (and each +head)
    inner_steps: int = DEFAULT_INNER_STEPS          # 5 (fewshot_acdc.vocabulary, shared with MAML)
    inner_steps_eval: int = DEFAULT_INNER_STEPS_EVAL  # 10
    inner_lr: Union[float, Dict[str, float]] = 0.01  # one step size for every parameter, or one per role:
                                      # {atoms: 1e-4, head: 0.1, default: 0.01} (roles: fewshot_acdc.vocabulary.ROLES;
                                      # default: every role not named). Initial values when learn_inner_lr is set
    learn_inner_lr: str = "none"      # none | lslr (per tensor and inner step, MAML++) | meta-sgd (per element)
    multi_step_anneal: Optional[int] = None  # MAML++ multi-step loss: the query loss after every inner step,
                                      # annealed to the last step over this many iterations (null: off)
    first_order: bool = False
    recompute_inner_steps: bool = False  # second order in bounded memory: each inner step keeps no graph and is
                                      # recomputed in the backward pass (the same meta-gradient, one more forward
                                      # and backward of the support set per step; README, docs/performance.md)
    batchnorm: str = "transductive"   # transductive: batch statistics everywhere (reference MAML) | per-step:
                                      # MAML++ BN weights and running statistics per inner step, used at test time
    head_init: str = "per-class"      # per-class: MAML's learned row per class | shared: one learned row copied to
                                      # every class at the start of each task (UNICORN-MAML; needs a scope that adapts the head)
    meta_lr: float = 1e-3
    meta_lr_schedule: str = "constant"  # constant | cosine (annealed to meta_lr_min over the run's iterations)
    meta_lr_min: float = 0.0
    meta_optimizer: str = "adam"      # adam | adamw | sgd (Nesterov momentum): the outer loop's optimiser
    weight_decay: float = 0.0         # the outer optimiser's (AdamW: decoupled; Adam, SGD: L2)
    momentum: float = 0.9             # SGD's Nesterov momentum, in the outer loop and in pretraining
    lr_scaling: str = "none"          # none | kernel: under Adam/AdamW (outer loop, pretraining) ACDC coefficients
                                      # learn as if stored at the scale of the kernel they compose (x gamma;
                                      # fewshot_acdc.nn.scaling); SGD and the inner loop keep their rates
    init: Optional[str] = None        # start from a pretraining run directory or checkpoint (pretrain.py): every
                                      # weight but the classifier, which starts at zero (N ways, not the
                                      # pretraining classes)
    meta_batch: int = 4
    grad_clip: Optional[float] = None
    task_batching: str = "sequential"
    iterations: int = 10000           # meta-steps (each of meta_batch tasks); with plateau_validations, the cap
    plateau_validations: Optional[int] = None  # stop once none of the last N validations beats the best earlier
                                      # one by more than its 95% CI (trained to a plateau; null: run all iterations)
    # Episodes
    ways: int = 5
    shots: int = 1
    queries: int = 16                 # per class in meta-training
    queries_eval: int = 15            # per class in validation and test episodes
    # Data
    dataset: str = "miniimagenet"
    data_root: Optional[str] = None   # None: $FEWSHOT_DATA, else ./data (and their <dataset>/ sub-folders)
    image_size: int = 84
    augment: bool = False
    rotations: bool = True            # Omniglot only: 90/180/270 degree rotations as new classes
    omniglot_background: str = "all"  # Omniglot only: all (every set found) | small1 | small2 (Lake's minimal
                                      # sets alone: one alphabet held out for validation, all_runs is the test)
    num_workers: int = 0
    episode_dir: Optional[str] = None  # where fixed val/test episode sets are saved (None: data's cache dir)
    # Supervised pretraining (pretrain.py): a linear classifier over every training class. Defaults
    # are RFS's (Tian et al. 2020) recipe, which in this toolkit's Omniglot probe trained standard and
    # ACDC networks alike (experiments/results/README.md); Adam at 1e-3 did not train ACDC-net.
    pretrain_optimizer: str = "sgd"   # adam | adamw | sgd (Nesterov momentum: `momentum`)
    pretrain_lr: float = 0.05
    pretrain_weight_decay: float = 5e-4
    pretrain_schedule: str = "cosine"  # constant | cosine (to 0 over the epochs, stepped per batch)
    pretrain_epochs: int = 15
    pretrain_batch: int = 64
    pretrain_holdout: int = 5         # images of each training class held out to measure generalisation
    # Schedule and bookkeeping
    log_every: int = 100
    val_every: int = 500
    val_episodes: int = 100
    test_episodes: int = 600
    eval_batch: Optional[int] = None  # evaluation episodes adapted together (torch.func.vmap); 1: one at a
                                      # time; null: 1 on a CPU (batching measured slower there), a
                                      # memory-bounded stack of up to 16 on a GPU (fewshot_acdc.meta.batching)
    tensorboard: bool = False         # also write metrics.jsonl's numbers to <run>/tensorboard (needs the
                                      # optional tensorboard package)
    device: str = "auto"
    threads: Optional[int] = None     # CPU threads for torch; None: torch's default (one per core).
                                      # On a CPU shared with other jobs, 1 can be several times faster.
    seed: int = 0

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
_CHOICES = {"backbone": BACKBONES, "conv": CONV_KINDS, "adapt": ADAPT_SCOPES, "dataset": DATASETS,
            "device": DEVICES, "task_batching": TASK_BATCHING, "learn_inner_lr": LEARNED_STEP_SIZES,
            "meta_lr_schedule": META_LR_SCHEDULES, "batchnorm": BATCHNORM_CHOICES, "head_init": HEAD_INITS,
            "omniglot_background": OMNIGLOT_BACKGROUNDS, "meta_optimizer": OPTIMIZERS,
            "pretrain_optimizer": OPTIMIZERS, "pretrain_schedule": META_LR_SCHEDULES, "lr_scaling": LR_SCALINGS}
_POSITIVE = ("inner_steps", "meta_batch", "ways", "shots", "queries", "queries_eval",
             "image_size", "log_every", "val_every", "val_episodes", "test_episodes", "pretrain_epochs",
             "pretrain_batch")
_NON_NEGATIVE = ("inner_steps_eval", "num_workers", "seed", "weight_decay", "pretrain_weight_decay", "pretrain_holdout")


def _validate(config: TrainConfig) -> None:
    for key, choices in _CHOICES.items():
        value = getattr(config, key)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}{_closest(value, choices)}")
    for key in _POSITIVE:
        if getattr(config, key) < 1:
            raise ConfigError(f"{key} must be >= 1, got {getattr(config, key)}")
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
    for key in _NON_NEGATIVE:
        if getattr(config, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {getattr(config, key)}")
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
    if config.multi_step_anneal is not None and config.multi_step_anneal < 1:
        raise ConfigError(f"multi_step_anneal must be >= 1 or null, got {config.multi_step_anneal}")
    if config.plateau_validations is not None and config.plateau_validations < 1:
        raise ConfigError(f"plateau_validations must be >= 1 or null, got {config.plateau_validations}")
    if config.eval_batch is not None and config.eval_batch < 1:
        raise ConfigError(f"eval_batch must be >= 1 or null, got {config.eval_batch}")
    if config.threads is not None and config.threads < 1:
        raise ConfigError(f"threads must be >= 1 or null, got {config.threads}")
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
