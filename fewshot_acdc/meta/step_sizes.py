"""Inner-loop step sizes: one per parameter role, optionally meta-learned (MAML++ LSLR, Meta-SGD).

Why one learning rate is not enough. The parameters of an ACDC backbone differ in scale by orders
of magnitude: a dictionary atom is used by every ``(out, in)`` channel pair of its layer, so its
gradient sums over ``C_out * C_in`` kernel gradients (ResNet18 ACDC-net at initialisation: the
atoms' gradient is 74x their norm, the coefficients' 0.03x, the head's 9x). A step size that
moves the head usefully scales the atoms by several times their size, and the support loss
explodes; one that suits the atoms leaves the head where it was. Hence a step size per *role*
(:data:`fewshot_acdc.nn.ROLES`: ``atoms``, ``coefficients``, ``norm``, ``head``, ``conv``, ...).

Learned step sizes (``learn``):

* ``none``: the configured per-role values, fixed.
* ``lslr``: one step size per adapted tensor and per inner step ("learning per-layer per-step
  learning rates", Antoniou et al. 2019, MAML++), initialised to the role's value and
  meta-learned with the other meta-parameters.
* ``meta-sgd``: one step size per adapted *element* (Li et al. 2017), initialised to the role's
  value; it is the same at every inner step, as in Meta-SGD.

Learned step sizes are stored as *scales* of their initial values (a parameter that starts at 1;
the step size is ``initial * scale``). Why: Adam moves each meta-parameter by about the meta
learning rate per step whatever its size, so a raw atom step size of 1e-4 would jump 20-fold in
one meta-step at ``meta_lr=0.002``, while its scale moves by 0.2%. The step sizes themselves, and
so everything the inner loop computes, are those of LSLR and Meta-SGD.

The step sizes handed to the inner loop are plain values (``float``), or tensors that the
meta-gradient reaches; :func:`step_size` reads one of them, so the inner loop stays a pure
function of (parameters, step sizes, episode).
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..utils import closest_name
from ..vocabulary import DEFAULT_ROLE, LEARNED_STEP_SIZES, check_role_learning_rates

StepSize = Union[float, torch.Tensor]
# name -> a step size for every step, or a tuple of them indexed by inner step
StepSizes = Union[float, Mapping[str, Union[StepSize, Tuple[StepSize, ...]]]]


def role_learning_rate(rates: Mapping[str, float], role: str) -> float:
    """The step size of ``role``: its own entry, else ``default``."""
    if role in rates:
        return rates[role]
    if DEFAULT_ROLE in rates:
        return rates[DEFAULT_ROLE]
    raise ValueError(f"inner_lr names no value for parameter role {role!r} and no 'default'; "
                     f"add {role}: <lr> or default: <lr>")


def step_size(step_sizes: StepSizes, name: str, step: int) -> StepSize:
    """The step size of parameter ``name`` at inner step ``step`` (0-based).

    A per-step tuple shorter than the number of steps (evaluation adapting longer than
    meta-training did) keeps its last value for the extra steps.
    """
    if not isinstance(step_sizes, Mapping):
        return step_sizes
    value = step_sizes[name]
    if isinstance(value, tuple):
        return value[min(step, len(value) - 1)]
    return value


def _key(name: str) -> str:
    # ParameterDict keys may not contain dots; parameter names never contain "__".
    return name.replace(".", "__")


class InnerStepSizes(nn.Module):
    """The step sizes of one MAML's inner loop: per-role values, fixed or meta-learned.

    Args:
        adapted: name -> tensor of every adapted parameter (shapes for ``meta-sgd``).
        roles: name -> role (:func:`fewshot_acdc.nn.parameter_roles`).
        inner_lr: one value for every role, or ``{role: value}`` with an optional ``default``.
        learn: ``none``, ``lslr`` or ``meta-sgd`` (module docstring).
        steps: inner steps in meta-training (the length of LSLR's per-step rates).

    The learned rates are this module's parameters (name keys with ``.`` replaced by ``__``): scales
    of the initial values (module docstring), to be optimised with the model's and saved with
    them (:meth:`state_dict`). :meth:`rate` gives a tensor's step sizes.
    """

    def __init__(self, adapted: Mapping[str, torch.Tensor], roles: Mapping[str, str],
                 inner_lr: Union[float, Mapping[str, float]], learn: str = "none", steps: int = 1) -> None:
        super().__init__()
        if learn not in LEARNED_STEP_SIZES:
            raise ValueError(f"learned step sizes {learn!r} is not one of {', '.join(LEARNED_STEP_SIZES)}"
                             f"{closest_name(learn, LEARNED_STEP_SIZES)}")
        self.role_rates = check_role_learning_rates(inner_lr)
        self.learn = learn
        self.steps = steps
        self.names = list(adapted)
        self.initial: Dict[str, float] = {name: role_learning_rate(self.role_rates, roles[name]) for name in self.names}
        self.learned = nn.ParameterDict()
        for name, tensor in adapted.items():
            if learn == "lslr":
                shape: Sequence[int] = (steps,)
            elif learn == "meta-sgd":
                shape = tuple(tensor.shape)
            else:
                continue
            self.learned[_key(name)] = nn.Parameter(torch.ones(shape, dtype=tensor.dtype, device=tensor.device))

    def rate(self, name: str) -> torch.Tensor:
        """The learned step sizes of parameter ``name``: ``[steps]`` (lslr) or its shape (meta-sgd)."""
        return self.initial[name] * self.learned[_key(name)]

    def values(self, detach: bool = False) -> StepSizes:
        """What :func:`step_size` reads: name -> float (fixed), a per-step tuple of 0-dim tensors
        (``lslr``) or an element-wise tensor (``meta-sgd``). ``detach`` cuts the meta-gradient
        (evaluation)."""
        if self.learn == "none":
            return dict(self.initial)
        values: Dict[str, Union[StepSize, Tuple[StepSize, ...]]] = {}
        for name in self.names:
            rate = self.rate(name)
            rate = rate.detach() if detach else rate
            values[name] = tuple(rate.unbind(0)) if self.learn == "lslr" else rate
        return values

    def summary(self) -> Dict[str, Dict[str, float]]:
        """Mean learned step size per adapted tensor (per step for ``lslr``), for logs."""
        out: Dict[str, Dict[str, float]] = {}
        for name in self.names:
            if self.learn == "none":
                out[name] = {"mean": self.initial[name]}
            else:
                rate = self.rate(name).detach()
                out[name] = ({f"step{k}": float(v) for k, v in enumerate(rate.cpu().tolist())}
                             if self.learn == "lslr" else {"mean": float(rate.mean())})
        return out

    def extra_repr(self) -> str:
        return f"learn={self.learn!r}, role_rates={self.role_rates}, tensors={len(self.names)}"


def multi_step_weights(steps: int, iteration: int, anneal_iterations: Optional[int]) -> Tuple[float, ...]:
    """MAML++'s multi-step loss weights of the query loss after each inner step.

    Uniform (``1/steps``) at iteration 0; every weight but the last falls linearly to
    ``0.03/steps`` (MAML++'s floor) by ``anneal_iterations``; the last takes the rest, so the
    weights always sum to 1 and the objective ends close to plain MAML's. ``None``: only the last
    step counts (plain MAML).
    """
    if anneal_iterations is None or steps == 1:
        return tuple(0.0 for _ in range(steps - 1)) + (1.0,)
    progress = min(max(iteration, 0) / anneal_iterations, 1.0)
    early = max((1.0 - progress) / steps, 0.03 / steps)
    return tuple(early for _ in range(steps - 1)) + (1.0 - early * (steps - 1),)
