"""Learnable repetition: a kernel tiled from a small learnable tensor, each tile with a learned scale.

After *Rescaling CNN through Learnable Repetition of Network Parameters*: a layer's kernel is
the repetition of a small *base* tensor over a grid of tiles, and each repetition carries its
own learnable transformation, here a scalar scale::

    W[i*bo + o, j*bi + c] = S[i, j] * B[o, c]      (then cropped to C_out x C_in)

* ``B`` (``base``): ``(bo, bi, kh, kw)`` with ``bo = min(b, C_out)``, ``bi = min(b, C_in)`` for
  the chosen base width ``b``. Within a layer it is repeated ``R_out x R_in`` times,
  ``R = ceil(C / b)``; tiles that overhang the layer are cropped.
* ``S`` (``scales``): ``(R_out, R_in)``, one scalar per repetition, always owned by the layer.

Sharing scopes (as ACDC's): ``repeat-layer`` gives every layer its own base; ``repeat-block``
one base per block and ``repeat-net`` one base for the whole network, repeated *across layers*
as well as within each; a shared base is one ``Parameter`` registered in the network's
``coefficient_bank`` (``coefficient_bank.base_net``, ``coefficient_bank.base_stage1`` ...) and
tied into every layer, which uses its leading ``(bo, bi)`` slice.

Initialization: base ``~ N(0, 1)`` and scales ``~ N(0, 2 / fan_in)`` with ``fan_in = C_in*kh*kw``,
so every kernel entry has the Kaiming (fan-in, ReLU) variance whatever the layer's width; random
(not constant) scales make the repetitions differ from the start, otherwise tiles of a layer
would stay exact copies of each other.

Trainable parameters per layer: ``R_out * R_in`` scales (+ bias), plus ``bo * bi * kh * kw`` for
an owned base; a shared base counts once.
"""
from __future__ import annotations

import math
from typing import Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .decomposed import DecomposedConv2d, IntPair


def validate_base_channels(base_channels: object) -> int:
    if not isinstance(base_channels, int) or isinstance(base_channels, bool) or base_channels < 1:
        raise ValueError(f"base channels must be an integer >= 1 (the repeated tensor's width b), got {base_channels!r}")
    return base_channels


def tile_kernel(base: torch.Tensor, scales: torch.Tensor, out_channels: int, in_channels: int) -> torch.Tensor:
    """Repeat ``base`` ``(bo, bi, kh, kw)`` over ``scales.shape`` tiles, tile ``(i, j)`` times
    ``scales[i, j]``, and crop to ``(out_channels, in_channels, kh, kw)``."""
    repeats_out, repeats_in = scales.shape
    base_out, base_in, kernel_h, kernel_w = base.shape
    tiles = scales[:, None, :, None, None, None] * base[None, :, None]  # (R_out, bo, R_in, bi, kh, kw)
    kernel = tiles.reshape(repeats_out * base_out, repeats_in * base_in, kernel_h, kernel_w)
    if kernel.shape[0] != out_channels or kernel.shape[1] != in_channels:
        kernel = kernel[:out_channels, :in_channels]
    return kernel


class RepeatedConv2d(DecomposedConv2d):
    """A convolution whose kernel tiles a small ``base`` tensor with per-tile learned ``scales``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as ``nn.Conv2d``.
        base_channels: the base width ``b``; the layer uses a ``(min(b, C_out), min(b, C_in))`` base.
        shared_base: ``None`` (the layer owns its base), a ``Parameter`` ``(bo', bi', kh, kw)``
            with ``bo' >= bo``, ``bi' >= bi`` shared with other layers (its leading slice is used),
            or ``"deferred"``: attached later by :class:`~fewshot_acdc.nn.ConvFactory`'s ``finalize``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: Union[IntPair, str] = 0,
        dilation: IntPair = 1,
        bias: bool = False,
        *,
        base_channels: int = 8,
        shared_base: Union[nn.Parameter, str, None] = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation)
        validate_base_channels(base_channels)
        self.base_channels = base_channels
        self.scales = nn.Parameter(torch.empty(self.repeats))
        self.shares_base = self.register_owned_or_shared("base", self.base_shape, shared_base, self.attach_shared_base)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.reset_parameters()

    @property
    def base_shape(self) -> Tuple[int, int, int, int]:
        """``(bo, bi, kh, kw)``: the part of a base this layer uses."""
        return (min(self.base_channels, self.out_channels), min(self.base_channels, self.in_channels),
                *self.kernel_size)

    @property
    def repeats(self) -> Tuple[int, int]:
        """``(R_out, R_in)``: tiles along output and input channels."""
        base_out, base_in = self.base_shape[:2]
        return (math.ceil(self.out_channels / base_out), math.ceil(self.in_channels / base_in))

    @property
    def fan_in(self) -> int:
        return self.in_channels * self.kernel_size[0] * self.kernel_size[1]

    def attach_shared_base(self, shared: nn.Parameter) -> None:
        """Use the leading slice of ``shared`` (tied: the same Parameter object)."""
        base_out, base_in, kernel_h, kernel_w = self.base_shape
        if (shared.dim() != 4 or tuple(shared.shape[2:]) != (kernel_h, kernel_w)
                or shared.shape[0] < base_out or shared.shape[1] < base_in):
            raise ValueError(
                f"shared base of shape {tuple(shared.shape)} cannot serve a layer that needs {self.base_shape}"
            )
        self.base = shared

    def reset_parameters(self) -> None:
        nn.init.normal_(self.scales, std=math.sqrt(2.0 / self.fan_in))
        if not self.shares_base:
            nn.init.normal_(self.base)

    def layer_base(self) -> torch.Tensor:
        base = self.base
        if base is None:
            raise RuntimeError(
                "this RepeatedConv2d was built with shared_base='deferred' and never attached to a shared "
                "tensor; build models through ConvFactory and call its finalize()"
            )
        base_out, base_in = self.base_shape[:2]
        if base.shape[0] != base_out or base.shape[1] != base_in:
            base = base[:base_out, :base_in]
        return base

    def kernel(self) -> torch.Tensor:
        return tile_kernel(self.layer_base(), self.scales, self.out_channels, self.in_channels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.conv2d(features, self.kernel(), self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        parts = [f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}",
                 f"stride={self.stride}", f"padding={self.padding}", f"base_channels={self.base_channels}",
                 f"repeats={self.repeats}", "shared_base" if self.shares_base else "own_base"]
        if self.dilation != (1, 1):
            parts.append(f"dilation={self.dilation}")
        if self.bias is None:
            parts.append("bias=False")
        return ", ".join(parts)
