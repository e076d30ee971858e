"""Layers: the ACDC convolution and its neighbours (BasisConv, DCF, learnable repetition), their
sharing scopes and the conv factory backbones build from."""
from .acdc import ACDCConv2d, channel_shuffle, compose_kernel
from .basis import BasisConv2d, convert_to_basisconv, random_orthogonal_basis
from .dcf import DCFConv2d, fourier_bessel_atoms
from .factory import CONV_KINDS, CoefficientBank, ConvFactory, ConvSpec
from .repetition import RepeatedConv2d, tile_kernel
from .norm import BATCHNORM_CHOICES, PerStepBatchNorm2d, inner_step, use_per_step_batchnorm
from .roles import ROLES, parameter_roles

__all__ = [
    "ACDCConv2d", "channel_shuffle", "compose_kernel",
    "BasisConv2d", "convert_to_basisconv", "random_orthogonal_basis",
    "DCFConv2d", "fourier_bessel_atoms", "RepeatedConv2d", "tile_kernel",
    "CONV_KINDS", "CoefficientBank", "ConvFactory", "ConvSpec",
    "ROLES", "parameter_roles",
    "BATCHNORM_CHOICES", "PerStepBatchNorm2d", "inner_step", "use_per_step_batchnorm",
]
