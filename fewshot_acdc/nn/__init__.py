"""Layers: the ACDC convolution, its sharing scopes and the conv factory backbones build from."""
from .acdc import ACDCConv2d, channel_shuffle, compose_kernel
from .factory import CONV_KINDS, CoefficientBank, ConvFactory, ConvSpec
from .roles import ROLES, parameter_roles

__all__ = [
    "ACDCConv2d", "channel_shuffle", "compose_kernel",
    "CONV_KINDS", "CoefficientBank", "ConvFactory", "ConvSpec",
    "ROLES", "parameter_roles",
]
