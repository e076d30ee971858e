"""Learning-rate scales that make an ACDC kernel move as fast as a standard kernel would.

Why. A standard 3x3 kernel starts with the Kaiming standard deviation ``sigma = sqrt(2 / fan_in)``
(0.06 for 64 input channels, 0.02 for 512). An ACDC kernel ``W = sum_j A[o, c, j] D[j]`` has the
same variance, but it is split into atoms ``D`` with that standard deviation and coefficients
``A`` with ``1 / sqrt(m)`` (0.35 for m = 8). Optimisers do not treat the two the same way:

* **Adam** moves every element by about its learning rate ``lr`` per step, whatever its gradient.
  A standard kernel then changes by ``lr / sigma`` of its size per step; through its coefficients
  an ACDC kernel changes by ``lr * sqrt(m)`` (each of the ``m`` coefficients of an entry moves by
  ``lr`` and multiplies an atom of size ``sigma``), ``gamma = 1 / (sqrt(m) * sigma)`` times less
  (6x in ResNet18's first stage, 17x in its last). The atoms' path moves at the standard rate.
* **SGD** moves an element by ``lr`` times its gradient. Rescaling a parameter ``p = gamma * q``
  multiplies the step it takes on ``p`` by ``gamma ** 2``; under SGD the coefficients' path moves
  a kernel ``gamma ** 2`` times less than a standard kernel's (``sqrt(m) k sigma ** 2`` of its rate).

The same fix serves both: train the coefficients as if they were stored ``gamma`` times smaller
(``A = gamma * q``, ``q`` at the kernel's scale ``sigma``), which is the same as giving them a
learning rate ``gamma`` times larger under Adam (Adam ignores the gradient's scale) and
``gamma ** 2`` times larger under SGD (momentum is linear, so the same holds with it). The
composed kernel keeps its Kaiming initialisation; nothing about the layer changes, so recorded
runs and checkpoints stay valid.

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


def learning_rate_scales(model: nn.Module, scaling: str, optimizer: str) -> Dict[str, float]:
    """Multipliers of the base learning rate, ``{parameter name: scale}`` for the parameters whose
    scale is not 1, under ``scaling`` (``none`` | ``kernel``, :data:`~fewshot_acdc.vocabulary.LR_SCALINGS`)
    for ``optimizer`` (``adam``/``adamw``: ``gamma``; ``sgd``, also the inner loop: ``gamma ** 2``)."""
    if scaling not in LR_SCALINGS:
        raise ValueError(f"lr scaling {scaling!r} is not one of {', '.join(LR_SCALINGS)}")
    if scaling == "none":
        return {}
    power = 2 if optimizer == "sgd" else 1
    return {name: gamma ** power for name, gamma in coefficient_gammas(model).items()}
