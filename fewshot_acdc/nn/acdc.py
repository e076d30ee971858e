"""Atom-coefficient decomposed convolution (ACDC).

A convolution kernel ``W`` of shape ``(C_out, C_in / G, kh, kw)`` is rebuilt at every forward
from ``m`` spatial dictionary atoms and a coefficient tensor::

    W[g * O + o, c] = sum_j  A[o, c, j] * D[g, j]        (O = C_out / G output channels per group)

* ``A`` (``coefficients``): ``(O, s, m)`` with ``s = C_in / G`` input channels per group. It is
  either owned by the layer (sharing scope ``layer``) or a *leading slice* of a larger tensor
  shared with other layers (scopes ``net`` and ``block``, see :mod:`fewshot_acdc.nn.factory`).
* ``D`` (``atoms``): ``(G, m, kh, kw)``, one dictionary of ``m`` atoms per input-channel group;
  without grouping ``G == 1``. Atoms are always owned by the layer.

With grouping (``group_size=s``) the convolution is a grouped convolution whose groups all use
the same coefficients but their own atoms; a channel shuffle on the output lets the next layer's
groups see every group's features (ACDC paper, section 2.4). The number of groups is
``G = max(C_in, C_out) / s`` (at least 1), so a group has at most ``s`` input and ``s`` output
channels and every grouped layer's coefficients fit in one ``(s, s, m)`` tensor: a square layer
has ``s`` in and ``s`` out per group, a widening layer (64 -> 128) ``s/2`` in and ``s`` out and
uses the leading slice. This is the reading under which the paper's grouped parameter counts
(Table 1, e.g. ResNet18 ACDC-g-net 0.20M / 0.26M) follow; see tests/test_params.py.

Shared coefficients are registered in every layer that uses them as the *same* ``Parameter``
object (tied weights). ``Module.named_parameters()`` therefore lists a shared tensor once, under
the name of the module that registered it first (the network's ``coefficient_bank``), and
``torch.func.functional_call`` replaces every tied occurrence when given that one name. This is
also what learn2learn's ``clone_module`` and higher's ``monkeypatch`` expect of tied weights.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
from torch import nn

from .decomposed import (DecomposedConv2d, IntPair, register_owned_or_shared, set_compute_path,
                         set_conv_geometry)
# The tensor functions live in nn.ops; re-exported here, where tests, benchmarks and the other
# layers have long imported them from.
from .ops import (COMPUTE_PATHS, coefficient_product, compose_kernel, composed_conv2d, custom_autograd_applies,
                  explicit_padding, factored_conv2d, factored_is_smaller, gradients_to_compute, with_grad_fn)

__all__ = [
    "ACDCConv2d", "channel_shuffle", "atom_drop_mask", "reset_coefficients", "validate_acdc_arguments",
    "group_count",
    # re-exported from .decomposed and .ops
    "DecomposedConv2d", "IntPair", "register_owned_or_shared", "set_compute_path", "set_conv_geometry", "COMPUTE_PATHS",
    "coefficient_product", "compose_kernel", "composed_conv2d", "custom_autograd_applies", "explicit_padding",
    "factored_conv2d", "factored_is_smaller", "gradients_to_compute", "with_grad_fn",
]


def channel_shuffle(features: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: interleave the channels of ``groups`` contiguous groups."""
    if groups == 1:
        return features
    batch, channels, height, width = features.shape
    return (
        features.view(batch, groups, channels // groups, height, width)
        .transpose(1, 2)
        .reshape(batch, channels, height, width)
    )


def atom_drop_mask(
    shape: Tuple[int, ...], drop_probability: float, like: torch.Tensor,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Bernoulli keep-mask scaled by ``1 / (1 - p)`` (inverted dropout), on ``like``'s device."""
    keep = 1.0 - drop_probability
    mask = torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(keep, generator=generator)
    return mask / keep


class ACDCConv2d(DecomposedConv2d):
    """A 2D convolution whose kernel is ``m`` learned atoms combined by coefficients.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as ``nn.Conv2d``.
        atoms: number of dictionary atoms ``m`` per group (``m >= 1``).
        group_size: channels per group ``s`` (``None``: no grouping). The layer gets
            ``G = max(in_channels, out_channels) / s`` groups (1 if both are below ``s``); ``G``
            must divide both channel counts.
        atom_drop: probability ``p`` in ``[0, 1)`` of dropping each atom in training mode; the kept
            atoms are scaled by ``1 / (1 - p)``. No dropping in ``eval()`` mode. Masks come from
            ``generator`` if given, else from torch's global RNG (seed it with
            ``torch.manual_seed`` for reproducible runs).
        shuffle: apply a channel shuffle to the output when grouped (default ``True``).
        compute: how the forward is evaluated; every path computes the same function.
            ``"kernel"`` composes the full kernel (:func:`compose_kernel`) and runs one
            convolution; ``"factored"`` never builds the kernel (:func:`factored_conv2d`: depthwise
            convolution with the atoms, then a 1x1 convolution with the coefficients);
            ``"auto"`` (default) picks, per call, the path whose largest intermediate is smaller:
            the kernel ``(C_out, C_in/G, kh, kw)`` or the ``(B, C_in * m, H_out, W_out)`` atom
            responses. Under MAML's inner loop the batch is a small support set, so deep layers
            (many channels, small maps) take the factored path, which keeps neither the kernel
            nor its gradient in the second-order graph; wide query batches and shallow layers
            compose the kernel.
        shared_coefficients: a ``Parameter`` of shape ``(O', s', m)`` with ``O' >= O`` and
            ``s' >= s`` shared with other layers; this layer uses its leading ``(O, s, m)`` slice.
            ``None``: the layer owns its coefficients. ``"deferred"``: shared, attached later with
            :meth:`attach_shared_coefficients` (what :class:`ConvFactory` does once it knows the
            largest layer of each sharing scope).

    Initialization: coefficients ``~ N(0, 1/m)`` (independent of the layer, so one tensor can be
    shared by layers of any width) and atoms ``~ N(0, 2 / fan_in)`` with ``fan_in = s * kh * kw``,
    so each kernel entry has variance ``m * (1/m) * 2/fan_in = 2 / fan_in``: the Kaiming (ReLU,
    fan-in) variance of an ordinary convolution of the same shape.
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
        atoms: int = 8,
        group_size: Optional[int] = None,
        atom_drop: float = 0.0,
        shuffle: bool = True,
        shared_coefficients: Union[nn.Parameter, str, None] = None,
        generator: Optional[torch.Generator] = None,
        compute: str = "auto",
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation)
        validate_acdc_arguments(in_channels, out_channels, atoms, group_size, atom_drop)
        self.set_compute_path(compute)
        self.num_atoms = atoms
        self.group_size = group_size
        self.groups = group_count(in_channels, out_channels, group_size)
        self.in_per_group = in_channels // self.groups
        self.out_per_group = out_channels // self.groups
        self.atom_drop = atom_drop
        self.shuffle = shuffle
        self.generator = generator

        kernel_h, kernel_w = self.kernel_size
        self.atoms = nn.Parameter(torch.empty(self.groups, atoms, kernel_h, kernel_w))
        self.shares_coefficients = self.register_owned_or_shared(
            "coefficients", self.coefficient_shape, shared_coefficients, self.attach_shared_coefficients)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        # Set for the duration of a backbone's forward by nested_coefficient_slices (sharing.py).
        self.coefficient_view = None  # an nn.sharing.SharedSlice within nested_coefficient_slices
        self.reset_parameters()

    @property
    def coefficient_shape(self) -> Tuple[int, int, int]:
        """Shape ``(O, s, m)`` of the coefficients this layer uses."""
        return (self.out_per_group, self.in_per_group, self.num_atoms)

    @property
    def fan_in(self) -> int:
        return self.in_per_group * self.kernel_size[0] * self.kernel_size[1]

    def attach_shared_coefficients(self, shared: nn.Parameter) -> None:
        """Use the leading slice of ``shared`` (tied: the same Parameter object)."""
        out_needed, in_needed, atoms = self.coefficient_shape
        if shared.dim() != 3 or shared.shape[2] != atoms or shared.shape[0] < out_needed or shared.shape[1] < in_needed:
            raise ValueError(
                f"shared coefficients of shape {tuple(shared.shape)} cannot serve a layer that needs "
                f"{self.coefficient_shape} (out per group, in per group, atoms)"
            )
        self.coefficients = shared

    def use_coefficient_view(self, view: Optional["SharedSlice"]) -> None:
        """Serve :meth:`layer_coefficients` from ``view`` (a :class:`~fewshot_acdc.nn.sharing.SharedSlice`
        of the shared tensor, made once per forward for every layer of this shape) until called with
        ``None``; :func:`~fewshot_acdc.nn.sharing.nested_coefficient_slices` does both."""
        self.coefficient_view = view

    def reset_parameters(self) -> None:
        nn.init.normal_(self.atoms, std=math.sqrt(2.0 / self.fan_in))
        if not self.shares_coefficients:
            reset_coefficients(self.coefficients)

    def layer_coefficients(self, contiguous: bool = False) -> torch.Tensor:
        """This layer's ``(O, s, m)`` coefficients: a view of the shared tensor if shared, or a
        contiguous tensor (what composing the kernel needs) if ``contiguous``."""
        if self.coefficient_view is not None:  # set by nn.sharing.nested_coefficient_slices
            return self.coefficient_view.contiguous() if contiguous else self.coefficient_view.view
        out_needed, in_needed, _ = self.coefficient_shape
        coefficients = self.coefficients
        if coefficients is None:
            raise RuntimeError(
                "this ACDCConv2d was built with shared_coefficients='deferred' and never attached to "
                "a shared tensor; build models through ConvFactory and call its finalize()"
            )
        if coefficients.shape[0] != out_needed or coefficients.shape[1] != in_needed:
            coefficients = coefficients[:out_needed, :in_needed]
        return coefficients.contiguous() if contiguous else coefficients

    def effective_atoms(self) -> torch.Tensor:
        if self.training and self.atom_drop > 0.0:
            mask = atom_drop_mask((self.groups, self.num_atoms, 1, 1), self.atom_drop, self.atoms, self.generator)
            return self.atoms * mask
        return self.atoms

    def kernel(self) -> torch.Tensor:
        """The full convolution kernel ``(C_out, C_in / G, kh, kw)`` used by this forward."""
        return compose_kernel(self.layer_coefficients(contiguous=True), self.effective_atoms())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        atoms = self.effective_atoms()
        if self.uses_factored_path(features):  # takes the strided slice as it is
            output = factored_conv2d(features, self.layer_coefficients(), atoms, self.bias, self.stride,
                                     self.explicit_padding, self.dilation)
        else:
            output = composed_conv2d(features, self.layer_coefficients(contiguous=True), atoms, self.bias,
                                     self.stride, self.padding, self.dilation, self.groups)
        if self.shuffle:
            output = channel_shuffle(output, self.groups)
        return output

    def extra_repr(self) -> str:
        parts = [
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}",
            f"stride={self.stride}", f"padding={self.padding}", f"atoms={self.num_atoms}",
        ]
        if self.dilation != (1, 1):
            parts.append(f"dilation={self.dilation}")
        if self.group_size is not None:
            parts.append(f"group_size={self.group_size}, groups={self.groups}, shuffle={self.shuffle}")
        if self.atom_drop:
            parts.append(f"atom_drop={self.atom_drop}")
        parts.append("shared_coefficients" if self.shares_coefficients else "own_coefficients")
        if self.compute != "auto":
            parts.append(f"compute={self.compute!r}")
        if self.bias is None:
            parts.append("bias=False")
        return ", ".join(parts)


def reset_coefficients(coefficients: torch.Tensor) -> None:
    """Coefficient init shared by owned and shared tensors: ``N(0, 1/m)``, ``m = shape[-1]``."""
    with torch.no_grad():
        coefficients.normal_(0.0, math.sqrt(1.0 / coefficients.shape[-1]))


def validate_acdc_arguments(
    in_channels: int, out_channels: int, atoms: int, group_size: Optional[int], atom_drop: float
) -> None:
    """Raise ``ValueError`` naming the bad value and what is accepted."""
    if not isinstance(atoms, int) or isinstance(atoms, bool) or atoms < 1:
        raise ValueError(f"atoms must be an integer >= 1, got {atoms!r}")
    if not (isinstance(atom_drop, (int, float)) and 0.0 <= atom_drop < 1.0):
        raise ValueError(f"atom_drop must be a probability in [0, 1), got {atom_drop!r}")
    if group_size is not None:
        if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
            raise ValueError(f"group_size must be a positive integer or None, got {group_size!r}")
        widest = max(in_channels, out_channels)
        groups = max(1, widest // group_size)
        if (widest >= group_size and widest % group_size) or in_channels % groups or out_channels % groups:
            accepted = [d for d in range(1, widest + 1)
                        if widest % d == 0 and in_channels % (widest // d) == 0 and out_channels % (widest // d) == 0]
            raise ValueError(
                f"group_size={group_size} does not divide the channels of a {in_channels}->{out_channels} "
                f"layer into equal groups; accepted group sizes for this layer: {accepted}"
            )


def group_count(in_channels: int, out_channels: int, group_size: Optional[int]) -> int:
    """Groups of a grouped ACDC layer: ``max(C_in, C_out) / s``, at least 1."""
    if group_size is None:
        return 1
    return max(1, max(in_channels, out_channels) // group_size)
