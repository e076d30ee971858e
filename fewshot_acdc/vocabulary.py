"""The toolkit's words that configuration, layers and algorithms share, without importing torch.

Reading a config (``fewshot_acdc.config``) must not import torch, yet it validates names the
layers and MAML define; those names live here once and the torch modules import them.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Union

from .utils import closest_name

# What each parameter of a backbone is (fewshot_acdc.nn.parameter_roles assigns them).
ROLES = ("atoms", "coefficients", "combination", "base", "scales", "conv", "norm", "head", "other")

# Inner-loop step sizes: fixed, per tensor and step (MAML++ LSLR), per element (Meta-SGD).
LEARNED_STEP_SIZES = ("none", "lslr", "meta-sgd")
# The key of a per-role inner_lr mapping that stands for every role it does not name.
DEFAULT_ROLE = "default"

# BatchNorm under MAML: batch statistics everywhere, or MAML++'s per-step weights and running statistics.
BATCHNORM_CHOICES = ("transductive", "per-step")

# Outer-loop learning-rate schedules.
META_LR_SCHEDULES = ("constant", "cosine")

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
