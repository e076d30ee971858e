"""What each parameter of a backbone *is*: the vocabulary MAML scopes and parameter reports use.

Roles: ``atoms`` (ACDC dictionary atoms), ``coefficients`` (ACDC coefficients, shared or not),
``conv`` (ordinary convolution weights and biases: the stem, 1x1 shortcuts, standard convs),
``norm`` (BatchNorm affine parameters), ``head`` (the classifier), ``other``.
"""
from __future__ import annotations

from typing import Dict

from torch import nn

from .acdc import ACDCConv2d
from .factory import CoefficientBank

ROLES = ("atoms", "coefficients", "conv", "norm", "head", "other")


def parameter_roles(model: nn.Module) -> Dict[str, str]:
    """Map every (deduplicated) parameter name of ``model`` to its role.

    Names are those of ``model.named_parameters()``, so a shared coefficient tensor appears once.
    The classifier is the submodule named ``head`` (every backbone in this package has one).
    """
    role_by_id: Dict[int, str] = {}
    head = getattr(model, "head", None)
    head_ids = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if id(parameter) in role_by_id:
                continue
            if id(parameter) in head_ids:
                role = "head"
            elif isinstance(module, ACDCConv2d):
                role = {"atoms": "atoms", "coefficients": "coefficients"}.get(name, "conv")
            elif isinstance(module, CoefficientBank):
                role = "coefficients"
            elif isinstance(module, nn.modules.conv._ConvNd):
                role = "conv"
            elif isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
                role = "norm"
            else:
                role = "other"
            role_by_id[id(parameter)] = role
    return {name: role_by_id[id(p)] for name, p in model.named_parameters()}
