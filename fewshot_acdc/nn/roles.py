"""What each parameter of a backbone *is*: the vocabulary MAML scopes and parameter reports use.

Roles: ``atoms`` (ACDC dictionary atoms), ``coefficients`` (ACDC coefficients, shared or not,
and DCF's per-layer coefficients on its fixed Fourier-Bessel atoms), ``combination`` (BasisConv's
learned 1x1 combination of its fixed basis filters), ``base`` (the small tensor a learnable-repetition
conv tiles, shared or not), ``scales`` (its per-repetition scales), ``conv`` (ordinary convolution
weights and biases: the stem, 1x1 shortcuts, standard convs, and the biases of decomposed convs),
``norm`` (BatchNorm affine parameters), ``head`` (the classifier), ``other``.

Fixed bases (BasisConv's filters, DCF's Fourier-Bessel atoms) are buffers, not parameters, so they
have no role: nothing trains or adapts them.
"""
from __future__ import annotations

from typing import Dict

from torch import nn

from ..vocabulary import ROLES  # defined torch-free, for the config
from .acdc import ACDCConv2d
from .basis import BasisConv2d
from .dcf import DCFConv2d
from .factory import CoefficientBank
from .norm import PerStepBatchNorm2d
from .repetition import RepeatedConv2d

# The classifier of every backbone here is its submodule ``head``: its parameters are the names
# under this prefix in ``named_parameters()`` (and in the functional parameter dicts of meta/).
HEAD_PREFIX = "head."


def is_head_parameter(name: str) -> bool:
    return name.startswith(HEAD_PREFIX)


# Parameter attribute -> role, for the layers whose parameters may be registered elsewhere (a
# shared repetition base lives in the network's coefficient_bank): the role follows the layer
# that *uses* a parameter, not the module that registered it.
_LAYER_ROLES = (
    (BasisConv2d, {"combination": "combination"}),
    (DCFConv2d, {"coefficients": "coefficients"}),
    (RepeatedConv2d, {"base": "base", "scales": "scales"}),
)


def parameter_roles(model: nn.Module) -> Dict[str, str]:
    """Map every (deduplicated) parameter name of ``model`` to its role.

    Names are those of ``model.named_parameters()``, so a shared coefficient tensor appears once.
    The classifier is the submodule named ``head`` (every backbone in this package has one).
    """
    role_by_id: Dict[int, str] = {}
    head = getattr(model, "head", None)
    head_ids = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    for module in model.modules():
        for layer_type, roles in _LAYER_ROLES:
            if isinstance(module, layer_type):
                for attribute, role in roles.items():
                    parameter = getattr(module, attribute, None)
                    if isinstance(parameter, nn.Parameter) and id(parameter) not in head_ids:
                        role_by_id.setdefault(id(parameter), role)
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if id(parameter) in role_by_id:
                continue
            if id(parameter) in head_ids:
                role = "head"
            elif isinstance(module, (ACDCConv2d, BasisConv2d, DCFConv2d, RepeatedConv2d)):
                role = {"atoms": "atoms", "coefficients": "coefficients"}.get(name, "conv")
            elif isinstance(module, CoefficientBank):
                role = "coefficients"
            elif isinstance(module, nn.modules.conv._ConvNd):
                role = "conv"
            elif isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, PerStepBatchNorm2d)):
                role = "norm"
            else:
                role = "other"
            role_by_id[id(parameter)] = role
    return {name: role_by_id[id(p)] for name, p in model.named_parameters()}
