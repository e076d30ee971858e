"""Layers: the ACDC convolution and its neighbours (BasisConv, DCF, learnable repetition), their
sharing scopes and the conv factory backbones build from.

The tensor functions the layers compute with (kernel path, factored path, their custom autograd
Functions, the shim around private torch calls) are in :mod:`fewshot_acdc.nn.ops`, whose
docstring maps the package; converting trained models to BasisConv is :mod:`.conversion`."""
from .acdc import ACDCConv2d, channel_shuffle, compose_kernel
from .basis import BasisConv2d, random_orthogonal_basis
from .conversion import convert_to_basisconv
from .dcf import DCFConv2d, fourier_bessel_atoms
from .decomposed import DecomposedConv2d
from .factory import CONV_KINDS, CoefficientBank, ConvFactory, ConvSpec
from .repetition import RepeatedConv2d, tile_kernel
from .norm import BATCHNORM_CHOICES, PerStepBatchNorm2d, inner_step, use_per_step_batchnorm
from .roles import ROLES, parameter_roles

__all__ = [
    "ACDCConv2d", "channel_shuffle", "compose_kernel",
    "BasisConv2d", "convert_to_basisconv", "random_orthogonal_basis",
    "DCFConv2d", "fourier_bessel_atoms", "DecomposedConv2d", "RepeatedConv2d", "tile_kernel",
    "CONV_KINDS", "CoefficientBank", "ConvFactory", "ConvSpec",
    "ROLES", "parameter_roles",
    "BATCHNORM_CHOICES", "PerStepBatchNorm2d", "inner_step", "use_per_step_batchnorm",
]
