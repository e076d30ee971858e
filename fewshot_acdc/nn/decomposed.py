"""What every decomposed conv layer (ACDC, DCF, BasisConv, learnable repetition) shares: the
``nn.Conv2d`` geometry, the compute path, and owned-or-shared registration of its decomposed tensor."""
from __future__ import annotations

from typing import Tuple, Union

import torch
from torch import nn

from .ops.paths import COMPUTE_PATHS, explicit_padding, factored_is_smaller

IntPair = Union[int, Tuple[int, int]]


def _pair(value: IntPair, name: str) -> Tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


def set_conv_geometry(module: nn.Module, in_channels: int, out_channels: int, kernel_size: IntPair,
                      stride: IntPair, padding: Union[IntPair, str], dilation: IntPair) -> None:
    """Check the channel counts and store the geometry as ``nn.Conv2d`` does (pairs; padding may
    stay ``"same"``/``"valid"``): the part every decomposed conv layer shares."""
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    module.in_channels = in_channels
    module.out_channels = out_channels
    module.kernel_size = _pair(kernel_size, "kernel_size")
    module.stride = _pair(stride, "stride")
    module.padding = padding if isinstance(padding, str) else _pair(padding, "padding")
    module.dilation = _pair(dilation, "dilation")


def set_compute_path(module: nn.Module, compute: str) -> None:
    """Store ``compute`` and the numeric padding the factored path needs (after
    :func:`set_conv_geometry`); refuse a path the layer cannot take."""
    if compute not in COMPUTE_PATHS:
        raise ValueError(f"compute must be one of {', '.join(COMPUTE_PATHS)}, got {compute!r}")
    module.compute = compute
    module.explicit_padding = explicit_padding(module.padding, module.kernel_size, module.dilation)
    if compute == "factored" and module.explicit_padding is None:
        raise ValueError(f"compute='factored' needs symmetric padding; padding={module.padding!r} with kernel "
                         f"{module.kernel_size} and dilation {module.dilation} pads one side more")


def register_owned_or_shared(module: nn.Module, name: str, shape: Tuple[int, ...],
                             shared: Union[nn.Parameter, str, None], attach) -> bool:
    """Give ``module`` the parameter ``name``: owned (``shared=None``: a new uninitialized tensor
    of ``shape``), shared (a ``Parameter``, tied through ``attach``), or ``"deferred"`` (``None``
    until a factory attaches the shared tensor). Returns whether the tensor is shared."""
    if shared is None:
        module.register_parameter(name, nn.Parameter(torch.empty(shape)))
        return False
    if isinstance(shared, str):
        if shared != "deferred":
            raise ValueError(f"shared_{name} must be a Parameter, None or 'deferred', got {shared!r}")
        module.register_parameter(name, None)
        return True
    attach(shared)
    return True


class DecomposedConv2d(nn.Module):
    """Base of the decomposed conv layers: an ``nn.Conv2d``'s geometry, with the kernel made of parts.

    ``__init__`` checks and stores the geometry (:func:`set_conv_geometry`); a subclass then
    validates its own arguments and, as it needs them, sets its compute path
    (:meth:`set_compute_path`) and registers its owned-or-shared tensor
    (:meth:`register_owned_or_shared`). Layers whose kernel is atoms times coefficients (ACDC,
    DCF) set ``out_channels``, ``in_per_group`` and ``num_atoms`` and get the per-call path choice
    :meth:`uses_factored_path`. The kernel path and the factored path themselves are functions of
    tensors in :mod:`fewshot_acdc.nn.ops`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair,
                 padding: Union[IntPair, str], dilation: IntPair) -> None:
        super().__init__()
        set_conv_geometry(self, in_channels, out_channels, kernel_size, stride, padding, dilation)

    def set_compute_path(self, compute: str) -> None:
        """Store ``compute`` (one of :data:`~fewshot_acdc.nn.ops.COMPUTE_PATHS`); see :func:`set_compute_path`."""
        set_compute_path(self, compute)

    def register_owned_or_shared(self, name: str, shape: Tuple[int, ...], shared: Union[nn.Parameter, str, None],
                                 attach) -> bool:
        """Register ``name`` owned, shared or deferred; see :func:`register_owned_or_shared`."""
        return register_owned_or_shared(self, name, shape, shared, attach)

    def uses_factored_path(self, features: torch.Tensor) -> bool:
        """Whether :meth:`forward` on ``features`` skips building the kernel (see ``compute``)."""
        return factored_is_smaller(self.compute, features, self.out_channels, self.in_per_group, self.num_atoms,
                                   self.kernel_size, self.stride, self.explicit_padding, self.dilation)
