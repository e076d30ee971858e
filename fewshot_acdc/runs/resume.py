"""What ``--resume`` may change, and making the changes take effect.

A resumed run continues the checkpoint's run. A value that only steers how it continues (how
long, how large a step, how it is logged, where the data and the episode files are, on which
device) may change, and takes effect from the next meta-step; each change is recorded with that
iteration (``config_changes`` in the checkpoints and in summary.json). Every other value defines
which run this is (model, data, episode stream, validation protocol, seed) or is laid out in the
checkpoint, and a change to it is refused naming what may change: silently keeping the
checkpoint's value while config.yaml shows the new one is what this module exists to prevent.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import torch

from ..config import RESUMABLE_KEYS, ConfigError, TrainConfig, canonical_values

# Keys a resume may change: the settings declared resumable=True on their TrainConfig field
# (fewshot_acdc.config.setting); new keys are refused until their field says so on purpose.
RESUMABLE = RESUMABLE_KEYS
# The keys a refusal lists first: the ones whose change has a further condition (_refusal).
_CONDITIONAL = ("iterations", "meta_lr", "inner_lr")

def _refusal(key: str, saved: Mapping[str, Any], config: TrainConfig, iteration: int) -> Optional[str]:
    """Why ``key`` may not change on this resume, or None."""
    values = config.to_dict()
    if key not in RESUMABLE:
        return "it defines the run (model, data, episodes, validation or seed)"
    if key == "iterations" and config.iterations < iteration:
        return f"the checkpoint is at iteration {iteration} already"
    if key in ("iterations", "meta_lr") and values.get("meta_lr_schedule", "constant") != "constant":
        return (f"the {values['meta_lr_schedule']} meta-lr schedule was laid out over the run's iterations from "
                "its meta_lr")
    learned = values.get("learn_inner_lr", "none")
    if key == "inner_lr" and learned != "none":
        return f"the step sizes are meta-learned (learn_inner_lr {learned}); inner_lr only initialised them"
    if key == "inner_steps" and learned == "lslr":
        return "lslr learns one step size per inner step"
    return None


def resume_changes(saved: Mapping[str, Any], config: TrainConfig, iteration: int) -> List[Dict[str, Any]]:
    """The changes from ``saved`` (the config the checkpoint at ``iteration`` was trained with) to
    ``config``, as records ``{"key", "from", "to", "from_iteration"}``; raises ConfigError listing
    every change that may not be made."""
    changes, refused = [], []
    saved = canonical_values(saved)  # a checkpoint from before `conv` was the one key holds `acdc`
    for key, value in config.to_dict().items():
        if key not in saved or saved[key] == value:
            continue  # (a key the checkpoint predates keeps its default: nothing to compare)
        reason = _refusal(key, saved, config, iteration)
        if reason is not None:
            refused.append(f"{key} ({saved[key]!r} -> {value!r}): {reason}")
        else:
            changes.append({"key": key, "from": saved[key], "to": value, "from_iteration": iteration + 1})
    if refused:
        raise ConfigError(
            "--resume cannot change " + "; ".join(refused) + ". A resumed run may change only "
            + ", ".join(_CONDITIONAL + tuple(k for k in RESUMABLE if k not in _CONDITIONAL)) + " (iterations and meta_lr only with the constant meta-lr schedule, inner_lr "
            "only with fixed step sizes); for anything else start a new run (another --out)")
    return changes


def apply_changes(changes: List[Dict[str, Any]], optimizer: torch.optim.Optimizer) -> None:
    """Make the changes that live in restored state, not in the config, take effect: the meta
    learning rate is in the optimizer's param groups, which the checkpoint restored. (The others
    are read from the config by the objects built from it.)"""
    for change in changes:
        if change["key"] == "meta_lr":
            for group in optimizer.param_groups:
                group["lr"] = change["to"] * group.get("scale", 1.0)


def describe(changes: List[Dict[str, Any]]) -> str:
    return ", ".join(f"{c['key']} {c['from']!r} -> {c['to']!r}" for c in changes)
