"""Learning-rate scales that make an ACDC kernel move under Adam as fast as a standard kernel would.

Why. A standard 3x3 kernel starts with the Kaiming standard deviation ``sigma = sqrt(2 / fan_in)``
(0.06 for 64 input channels, 0.02 for 512). An ACDC kernel ``W = sum_j A[o, c, j] D[j]`` has the
same variance, but it is split into atoms ``D`` with that standard deviation and coefficients
``A`` with ``1 / sqrt(m)`` (0.35 for m = 8). Optimisers do not treat the two the same way:

* **Adam** moves every element by about its learning rate ``lr`` per step, whatever its gradient.
  A standard kernel then changes by ``lr / sigma`` of its size per step; through its coefficients
  an ACDC kernel changes by ``lr * sqrt(m)`` (each of the ``m`` coefficients of an entry moves by
  ``lr`` and multiplies an atom of size ``sigma``), ``gamma = 1 / (sqrt(m) * sigma)`` times less
  (6x in ResNet18's first stage, 17x in its last). The atoms' path moves at the standard rate.
* **SGD** moves an element by ``lr`` times its gradient, and a coefficient's gradient already sums
  the contributions of every kernel entry it multiplies (in every layer that shares it). There is
  no per-element normalisation to undo: SGD with momentum trains ACDC-net as well as standard
  networks in supervised training (issue 30's probe: 84.6% vs 88.3% held-out, ResNet18), and the
  reparametrisation's SGD counterpart (``gamma ** 2``, what storing the coefficients ``gamma``
  times smaller does to SGD's step) overshoots: one inner step of ResNet18 ACDC-net at
  initialisation raises the support loss x1.49 with it and lowers it x0.97 without it
  (``experiments/results/inner-lr-probe/resnet18-acdc-net-all-5w1s-lr-scaling-*.json``).

So the fix is Adam's alone: train the coefficients under Adam as if they were stored at the
kernel's scale (``A = gamma * q``, ``q`` with standard deviation ``sigma``), which is the same as
giving them a learning rate ``gamma`` times larger (Adam ignores the gradient's scale; up to its
epsilon). SGD (the inner loop, SGD outer loops and pretraining) keeps its rates. The composed
kernel keeps its Kaiming initialisation; nothing about the layer changes, so recorded runs and
checkpoints stay valid.

A coefficient tensor shared by layers of different widths (ACDC-net, ACDC-block) gets one
``gamma``: the geometric mean over the layers that use it (learning rates act multiplicatively).
Other parameters (atoms, standard kernels, BatchNorm, the head) keep a scale of 1.
"""
from __future__ import annotations

import math
from typing import Dict

from torch import nn

from ..vocabulary import LR_SCALINGS
from .acdc import ACDCConv2d


def coefficient_gammas(model: nn.Module) -> Dict[str, float]:
    """``{parameter name: gamma}`` for every ACDC coefficient tensor of ``model`` (names as in
    ``model.named_parameters()``, a shared tensor once): ``1 / (sqrt(m) * sigma)`` with ``sigma``
    the Kaiming standard deviation ``sqrt(2 / fan_in)`` of the kernels it composes, geometrically
    averaged over the layers that share it. Computed from the shapes alone, so it is the same
    for every seed and after loading trained weights."""
    log_sigmas: Dict[int, list] = {}
    atoms: Dict[int, int] = {}
    for module in model.modules():
        if isinstance(module, ACDCConv2d) and module.coefficients is not None:
            key = id(module.coefficients)
            log_sigmas.setdefault(key, []).append(0.5 * math.log(2.0 / module.fan_in))
            atoms[key] = module.num_atoms
    gammas: Dict[str, float] = {}
    for name, parameter in model.named_parameters():
        key = id(parameter)
        if key in log_sigmas:
            sigma = math.exp(sum(log_sigmas[key]) / len(log_sigmas[key]))
            gammas[name] = 1.0 / (math.sqrt(atoms[key]) * sigma)
    return gammas


# The optimisers whose step is normalised per element, so that a parameter's scale sets how fast it moves.
ELEMENT_NORMALISED = ("adam", "adamw")


def learning_rate_scales(model: nn.Module, scaling: str, optimizer: str) -> Dict[str, float]:
    """Multipliers of the base learning rate, ``{parameter name: scale}`` for the parameters whose
    scale is not 1, under ``scaling`` (``none`` | ``kernel``, :data:`~fewshot_acdc.vocabulary.LR_SCALINGS`)
    for ``optimizer``: ``gamma`` for the coefficients under ``adam``/``adamw``; nothing under
    ``sgd``, which the inner loop also is (module docstring)."""
    if scaling not in LR_SCALINGS:
        raise ValueError(f"lr scaling {scaling!r} is not one of {', '.join(LR_SCALINGS)}")
    if scaling == "none" or optimizer not in ELEMENT_NORMALISED:
        return {}
    return coefficient_gammas(model)
