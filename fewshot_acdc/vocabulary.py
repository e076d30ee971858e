"""The toolkit's words that configuration, layers and algorithms share, without importing torch.

Reading a config (``fewshot_acdc.config``) must not import torch, yet it validates names the
layers and MAML define; those names live here once and the torch modules import them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, FrozenSet, Mapping, Optional, Union

from .utils import closest_name

# What each parameter of a backbone is (fewshot_acdc.nn.parameter_roles assigns them).
ROLES = ("atoms", "coefficients", "combination", "base", "scales", "conv", "norm", "head", "other")

# Inner steps when a run does not say: 5 in meta-training, 10 at test time (Finn et al. 2017's
# miniImageNet protocol); the defaults of both TrainConfig and MAML.
DEFAULT_INNER_STEPS = 5
DEFAULT_INNER_STEPS_EVAL = 10

# Inner-loop step sizes: fixed, per tensor and step (MAML++ LSLR), per element (Meta-SGD).
LEARNED_STEP_SIZES = ("none", "lslr", "meta-sgd")
# The key of a per-role inner_lr mapping that stands for every role it does not name.
DEFAULT_ROLE = "default"

# BatchNorm under MAML: batch statistics everywhere, or MAML++'s per-step weights and running statistics.
BATCHNORM_CHOICES = ("transductive", "per-step")

# Where each task's classifier starts: MAML's learned per-class rows, or one learned row shared by
# every class (Ye & Chao 2022, "UNICORN-MAML"): the initial head then cannot favour a label, so the
# meta-learned model is the same for any permutation of an episode's classes and for any number of
# ways (a 5-way-trained model scores 20-way episodes with the same start).
HEAD_INITS = ("per-class", "shared")

# Outer-loop learning-rate schedules (also pretraining's).
META_LR_SCHEDULES = ("constant", "cosine")

# Optimisers of the outer loop and of supervised pretraining (SGD: with Nesterov momentum).
OPTIMIZERS = ("adam", "adamw", "sgd")

# Per-parameter learning-rate scales (fewshot_acdc.nn.scaling): none, or kernel: under Adam/AdamW,
# ACDC coefficients trained as if stored at the scale of the kernel they compose (x gamma), so that
# an ACDC kernel moves as fast as a standard one; SGD (and the inner loop) is left as it is.
LR_SCALINGS = ("none", "kernel")

# Which Omniglot background images a run learns from: every set found (the default), or one of
# Lake et al.'s two minimal 5-alphabet sets alone (their one-shot benchmark's hardest setting,
# whose test is the all_runs benchmark).
OMNIGLOT_BACKGROUNDS = ("all", "small1", "small2")


def check_role_learning_rates(inner_lr: Union[float, Mapping[str, float]]) -> Dict[str, float]:
    """``inner_lr`` as ``{role or 'default': value}``; one number means every role.

    Raises ``ValueError`` naming an unknown role (and the closest one) or a value that is not a
    finite number > 0.
    """
    mapping = dict(inner_lr) if isinstance(inner_lr, Mapping) else {DEFAULT_ROLE: inner_lr}
    if not mapping:
        raise ValueError("inner_lr: an empty mapping; give one number or {role: lr} (roles: "
                         f"{', '.join(ROLES)}, or 'default')")
    valid = (*ROLES, DEFAULT_ROLE)
    for role, value in mapping.items():
        if role not in valid:
            raise ValueError(f"inner_lr: unknown parameter role {role!r}{closest_name(role, valid)}; roles: "
                             f"{', '.join(valid)} ('default' stands for every role not named)")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            which = f"inner_lr for {role!r}" if isinstance(inner_lr, Mapping) else "inner_lr"
            raise ValueError(f"{which} must be a finite number > 0, got {value!r}")
    return {role: float(value) for role, value in mapping.items()}


# ------------------------------------------------------------------------------------ conv kinds
@dataclass(frozen=True)
class ConvKind:
    """What a conv kind is: the facts config, factory, scopes, parameter counts and results need.

    ``family``: standard, acdc, basis, dcf or repeat. ``sharing``: which layers share the kind's
    shared tensor (ACDC coefficients, repetition base): net, block or layer; BasisConv and DCF
    own everything per layer (``layer``); None for standard convolutions. ``size_key``: the name
    of the kind's size setting (config key, ``create_backbone`` keyword, CLI flag): ``atoms``
    (ACDC's m), ``rank`` (BasisConv's r), ``bessel_atoms`` (DCF's K), ``base_width``
    (repetition's b), None for standard convolutions; ``size_knob`` says what it counts.
    ``roles``: the parameter roles its layers hold besides the ordinary conv/norm/head ones (what a
    scope can select).
    """
    name: str
    family: str
    sharing: Optional[str]
    grouped: bool
    size_key: Optional[str]
    size_knob: Optional[str]
    roles: FrozenSet[str]

    @property
    def is_acdc(self) -> bool:
        return self.family == "acdc"

    @property
    def decomposed(self) -> bool:
        """Every kind but standard: it has a size setting (:attr:`size_key`)."""
        return self.family != "standard"

    @property
    def acdc_sharing(self) -> str:
        """The value of the ``--acdc`` alias naming this kind (``none`` for non-ACDC kinds)."""
        return self.sharing_name if self.is_acdc else "none"

    @property
    def sharing_name(self) -> str:
        return ("g-" if self.grouped else "") + str(self.sharing)


def _conv_kinds() -> Dict[str, ConvKind]:
    kinds = [ConvKind("standard", "standard", None, False, None, None, frozenset())]
    for grouped in (False, True):
        for sharing in ("net", "block", "layer"):
            kinds.append(ConvKind(f"acdc-{'g-' if grouped else ''}{sharing}", "acdc", sharing, grouped, "atoms",
                                  "m dictionary atoms per layer" + (" and group" if grouped else ""),
                                  frozenset({"atoms", "coefficients"})))
    kinds.append(ConvKind("basis", "basis", "layer", False, "rank", "r basis filters per layer",
                          frozenset({"combination"})))
    kinds.append(ConvKind("dcf", "dcf", "layer", False, "bessel_atoms", "K Fourier-Bessel atoms per layer",
                          frozenset({"coefficients"})))
    for sharing in ("net", "block", "layer"):
        kinds.append(ConvKind(f"repeat-{sharing}", "repeat", sharing, False, "base_width",
                              "b channels in the repeated base", frozenset({"base", "scales"})))
    return {kind.name: kind for kind in kinds}


CONV_KIND_TABLE: Dict[str, ConvKind] = _conv_kinds()
CONV_KINDS = tuple(CONV_KIND_TABLE)
# The values of the `--acdc` alias (older configs' `acdc` key): an ACDC sharing scope, or none.
ACDC_SHARINGS = ("none",) + tuple(k.sharing_name for k in CONV_KIND_TABLE.values() if k.is_acdc)


# The size settings of the decomposed kinds, each named for what it counts (ConvKind.size_key), and
# the size a kind gets when its setting is not given.
SIZE_KEYS = tuple(dict.fromkeys(k.size_key for k in CONV_KIND_TABLE.values() if k.size_key))
DEFAULT_CONV_SIZE = 8


def conv_kind(name: str) -> ConvKind:
    """The :class:`ConvKind` called ``name``; ``ValueError`` naming the closest kind otherwise."""
    if name not in CONV_KIND_TABLE:
        raise ValueError(f"unknown conv kind {name!r}{closest_name(name, CONV_KINDS)}; accepted: {', '.join(CONV_KINDS)}")
    return CONV_KIND_TABLE[name]


def conv_for_acdc(sharing: str) -> str:
    """The conv kind the ``--acdc`` alias names: ``none`` -> ``standard``, ``net`` -> ``acdc-net`` ..."""
    if sharing not in ACDC_SHARINGS:
        raise ValueError(f"acdc: {sharing!r} is not one of {', '.join(ACDC_SHARINGS)}{closest_name(sharing, ACDC_SHARINGS)}")
    return "standard" if sharing == "none" else f"acdc-{sharing}"


def kinds_sized_by(size_key: str) -> str:
    """The conv kinds whose size setting is ``size_key``, in words (for error messages)."""
    names = [k.name for k in CONV_KIND_TABLE.values() if k.size_key == size_key]
    return names[0] if len(names) == 1 else f"{names[0].split('-', 1)[0]}-*"


def conv_size(kind: Union[str, ConvKind], sizes: Mapping[str, Optional[int]]) -> Optional[int]:
    """The size of conv kind ``kind`` from ``sizes`` (size key -> value or None, e.g. a config's or
    ``create_backbone``'s keywords): the value under the kind's own key, :data:`DEFAULT_CONV_SIZE`
    when it is not given, None for standard convolutions. ``ValueError`` when ``sizes`` gives a
    key that does not size this kind (e.g. ``atoms`` for ``basis``, whose size is ``rank``) or an
    unknown key; it names the right one.
    """
    kind = kind if isinstance(kind, ConvKind) else conv_kind(kind)
    for key, value in sizes.items():
        if key not in SIZE_KEYS:
            raise ValueError(f"unknown size setting {key!r}{closest_name(key, SIZE_KEYS)}; "
                             f"the conv kinds' sizes are {', '.join(SIZE_KEYS)}")
        if value is not None and key != kind.size_key:
            raise ValueError(size_mismatch(key, kind))
    if kind.size_key is None:
        return None
    value = sizes.get(kind.size_key)
    return DEFAULT_CONV_SIZE if value is None else value


def size_mismatch(size_key: str, kind: ConvKind) -> str:
    """Why ``size_key`` cannot size ``kind``, naming the setting that does."""
    what = f"{size_key} is the size of {kinds_sized_by(size_key)} convolutions"
    if kind.size_key is None:
        return f"{what}; conv {kind.name!r} (plain convolutions) has no size setting: leave {size_key} out"
    return f"{what}; conv {kind.name!r} is sized by {kind.size_key} ({kind.size_knob}): give {kind.size_key} instead"


# ------------------------------------------------------------------------------------ scopes
@dataclass(frozen=True)
class Scope:
    """An inner-loop scope: the parameter roles MAML adapts within a task (None: every one)."""
    name: str
    roles: Optional[FrozenSet[str]]

    @property
    def trunk_frozen(self) -> bool:
        """Only the classifier adapts: the trunk's features can be computed once per task."""
        return self.roles == frozenset({"head"})

    @property
    def adapts_head(self) -> bool:
        return self.roles is None or "head" in self.roles

    def missing_roles(self, kind: ConvKind) -> FrozenSet[str]:
        """The roles this scope adapts that ``kind``'s layers do not have (the head is always there)."""
        if self.roles is None:
            return frozenset()
        return frozenset(self.roles - {"head"} - kind.roles)


SCOPE_TABLE: Dict[str, Scope] = {scope.name: scope for scope in (
    Scope("all", None),
    *(Scope(name, frozenset(name.split("+"))) for name in (
        "atoms", "head", "atoms+head", "coefficients", "coefficients+head", "combination", "combination+head",
        "scales", "scales+head")),
)}
ADAPT_SCOPES = tuple(SCOPE_TABLE)
# Conv family -> the scope that adapts its small part within a task.
FAMILY_SCOPES = {"acdc": "atoms", "dcf": "coefficients", "basis": "combination", "repeat": "scales"}


# The roles only some conv kinds hold: (what they are, what backbone has them), for messages.
ROLE_HOLDERS = {
    "atoms": ("ACDC atoms", "an ACDC backbone"),
    "coefficients": ("ACDC or DCF coefficients", "an ACDC or DCF backbone"),
    "combination": ("BasisConv's 1x1 combinations", "a BasisConv backbone"),
    "scales": ("learnable-repetition scales", "a learnable-repetition backbone"),
}


def kinds_with_role(role: str) -> str:
    """The conv kinds whose layers hold ``role``, in words (for error messages)."""
    families = sorted({k.family for k in CONV_KIND_TABLE.values() if role in k.roles})
    names = [f"{family}-*" if sum(k.family == family for k in CONV_KIND_TABLE.values()) > 1 else family
             for family in families]
    return "conv kind " + " or ".join(names)


# ------------------------------------------------------------------------------------ backbones
# Every backbone fewshot_acdc.models registers (tests/models checks the registry agrees).
BACKBONES = ("conv4", "resnet10", "resnet18", "resnet34", "resnet18-cifar", "vgg16", "wrn-40-4")

# Under torchrun: how long (seconds) a rank waits for the others at a collective before the job
# fails; torch's own default. A rank that dies ends the job at once (torchrun stops the others);
# this bounds a rank that hangs.
DISTRIBUTED_TIMEOUT_SECONDS = 1800.0
