"""One conv factory for every backbone: standard convolutions or any ACDC variant.

Backbones never construct convolutions themselves; they call a :class:`ConvFactory` for each
decomposable convolution and name the *block* it belongs to (a run of layers with equal width
and feature size, e.g. a ResNet stage). The factory's :class:`ConvSpec` decides what is built:

========================  ==========================================================
kind                      coefficients
========================  ==========================================================
``standard``              ordinary ``nn.Conv2d`` (Kaiming-normal, fan-in, ReLU gain)
``acdc-net``              one tensor for the whole network, sized by its largest layer
``acdc-block``            one tensor per block, sized by the block's largest layer
``acdc-layer``            one tensor per layer
``acdc-g-net``            as ``acdc-net`` but grouped: one ``(s, s, m)`` tensor shared by
                          every group of every layer, channel shuffle after each layer
``acdc-g-block``          grouped, one tensor per block
``acdc-g-layer``          grouped, one tensor per layer (shared across its groups)
``basis``                 BasisConv: ``rank`` ``r`` fixed random orthogonal filters
                          (a buffer) and a learned 1x1 combination (:mod:`.basis`)
``dcf``                   DCF: per-layer coefficients on ``bessel_atoms`` ``K`` fixed
                          Fourier-Bessel atoms (:mod:`.dcf`)
``repeat-net``            learnable repetition: one ``(b, b, k, k)`` base tensor
                          (``base_width`` ``b``) for the network, tiled in every layer
                          with per-tile learned scales (:mod:`.repetition`)
``repeat-block``          one base tensor per block
``repeat-layer``          one base tensor per layer
========================  ==========================================================

:attr:`ConvSpec.size` is the kind's size, which each kind names for what it counts
(:attr:`~fewshot_acdc.vocabulary.ConvKind.size_key`): ACDC's ``atoms`` ``m``, BasisConv's
``rank`` ``r``, DCF's ``bessel_atoms`` ``K``, repetition's ``base_width`` ``b``
(``create_backbone`` and the config take those names). ``atom_drop`` and ``shuffle`` only apply
to the ACDC kinds.

Shared tensors live in a :class:`CoefficientBank` that the backbone registers *before* its
layers, so ``named_parameters()`` names each one once as ``coefficient_bank.<scope>``
(``coefficient_bank.net``, ``coefficient_bank.stage3`` ...). Layers of a smaller width use the
leading slice of their scope's tensor (ACDC paper, section 2.3).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from .acdc import ACDCConv2d, reset_coefficients, validate_acdc_arguments
from .basis import BasisConv2d
from .dcf import DCFConv2d
from .repetition import RepeatedConv2d

from ..vocabulary import CONV_KINDS, DEFAULT_CONV_SIZE, ConvKind, conv_kind, conv_size


@dataclass(frozen=True)
class ConvSpec:
    """What kind of convolution a backbone gets. Validated at construction.

    ``size`` is the kind's size (ACDC atoms m, BasisConv rank r, DCF Fourier-Bessel atoms K,
    repetition base width b; :data:`~fewshot_acdc.vocabulary.DEFAULT_CONV_SIZE` when None), so
    code that loops over kinds can size them alike; standard convolutions have none (it reads
    None, as ``atom_drop`` means nothing to them). :meth:`sized` takes the size under the kind's
    own name and refuses another kind's (``ConvSpec.sized("basis", rank=16)``).
    """

    kind: str = "standard"
    size: Optional[int] = None
    group_size: Optional[int] = None
    atom_drop: float = 0.0
    shuffle: bool = True

    def __post_init__(self) -> None:
        facts = conv_kind(self.kind)  # unknown kinds: ValueError naming the closest
        if facts.size_key is None:  # plain convolutions have no size (as they have no atom drop)
            object.__setattr__(self, "size", None)
        elif self.size is None:
            object.__setattr__(self, "size", DEFAULT_CONV_SIZE)
        if self.is_acdc:
            # Channel counts are checked per layer; here only the layer-independent values.
            validate_acdc_arguments(1, 1, self.size, None, self.atom_drop)
        elif self.family in ("basis", "dcf", "repeat"):
            # The upper limits depend on each layer's shape and are checked per layer.
            if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 1:
                raise ValueError(f"{facts.size_key} ({facts.size_knob}) must be an integer >= 1, got {self.size!r}")
        if self.grouped:
            if self.group_size is None:
                raise ValueError(f"conv kind {self.kind!r} needs a group_size (channels per group)")
            validate_acdc_arguments(self.group_size, self.group_size, self.size, self.group_size, self.atom_drop)
        elif self.group_size is not None:
            raise ValueError(
                f"group_size={self.group_size} is only used by the grouped kinds "
                f"(acdc-g-net, acdc-g-block, acdc-g-layer), not by {self.kind!r}"
            )

    @classmethod
    def sized(cls, kind: str, *, group_size: Optional[int] = None, atom_drop: float = 0.0, shuffle: bool = True,
              **size: Optional[int]) -> "ConvSpec":
        """``ConvSpec.sized("acdc-net", atoms=8)``, ``("basis", rank=16)``, ``("dcf", bessel_atoms=6)``,
        ``("repeat-net", base_width=32)``: the size under the kind's own name (ValueError for
        another kind's name, naming the right one)."""
        return cls(kind, conv_size(kind, size), group_size, atom_drop, shuffle)

    @property
    def facts(self) -> ConvKind:
        """The kind's entry in the one table of conv kinds (:mod:`fewshot_acdc.vocabulary`)."""
        return conv_kind(self.kind)

    @property
    def is_acdc(self) -> bool:
        return self.facts.is_acdc

    @property
    def family(self) -> str:
        """``standard``, ``acdc``, ``basis``, ``dcf`` or ``repeat``."""
        return self.facts.family

    @property
    def grouped(self) -> bool:
        return self.facts.grouped

    @property
    def sharing(self) -> Optional[str]:
        """``"net"``, ``"block"``, ``"layer"`` (ACDC and repetition kinds; ``"layer"`` for BasisConv
        and DCF, which share nothing) or ``None`` for standard convolutions."""
        return self.facts.sharing


class CoefficientBank(nn.Module):
    """Holds the coefficient tensors shared across layers, one ``Parameter`` per scope key."""

    def add(self, key: str, shape: Tuple[int, int, int]) -> nn.Parameter:
        parameter = nn.Parameter(torch.empty(shape))
        reset_coefficients(parameter)
        self.register_parameter(key, parameter)
        return parameter

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={tuple(p.shape)}" for key, p in self._parameters.items())


class ConvFactory:
    """Builds the decomposable convolutions of one backbone.

    Usage inside a backbone's ``__init__``::

        self.coefficient_bank = CoefficientBank()      # first, so shared names are canonical
        conv = self.conv1 = factory(64, 64, 3, padding=1, block="stage1")
        ...
        factory.finalize(self.coefficient_bank)        # sizes and ties the shared tensors
    """

    def __init__(self, spec: ConvSpec) -> None:
        self.spec = spec
        self._pending: List[Tuple[ACDCConv2d, str]] = []
        self._pending_bases: List[Tuple[RepeatedConv2d, str]] = []
        self._finalized = False

    def __call__(
        self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=0,
        dilation=1, bias: bool = False, *, block: str,
    ) -> nn.Module:
        if self._finalized:
            raise RuntimeError("ConvFactory.finalize() was already called; use a new factory per model")
        spec = self.spec
        if spec.kind == "standard":
            conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=bias)
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
            if bias:
                nn.init.zeros_(conv.bias)
            # Marks the convs a backbone could decompose (not the stem or 1x1 shortcuts), e.g. for
            # fewshot_acdc.nn.conversion.convert_to_basisconv.
            conv.factory_block = block
            return conv
        if not spec.is_acdc:
            conv = self._build_other(spec, in_channels, out_channels, kernel_size, stride, padding, dilation, bias, block)
            conv.factory_block = block
            return conv
        shared = spec.sharing in ("net", "block")
        try:
            conv = ACDCConv2d(
                in_channels, out_channels, kernel_size, stride, padding, dilation, bias,
                atoms=spec.size, group_size=spec.group_size, atom_drop=spec.atom_drop,
                shuffle=spec.shuffle, shared_coefficients="deferred" if shared else None,
            )
        except ValueError as error:
            raise ValueError(f"{spec.kind} layer {in_channels}->{out_channels} in {block!r}: {error}") from None
        if shared:
            self._pending.append((conv, "net" if spec.sharing == "net" else block))
        conv.factory_block = block
        return conv

    def _build_other(self, spec: ConvSpec, in_channels, out_channels, kernel_size, stride, padding, dilation,
                     bias, block) -> nn.Module:
        """BasisConv, DCF and learnable-repetition layers, sized by ``spec.size``."""
        shared = spec.family == "repeat" and spec.sharing in ("net", "block")
        try:
            if spec.family == "basis":
                return BasisConv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias,
                                   rank=spec.size)
            if spec.family == "dcf":
                return DCFConv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias,
                                 atoms=spec.size)
            conv = RepeatedConv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias,
                                  base_channels=spec.size, shared_base="deferred" if shared else None)
        except ValueError as error:
            raise ValueError(f"{spec.kind} layer {in_channels}->{out_channels} in {block!r}: {error}") from None
        if shared:
            self._pending_bases.append((conv, "net" if spec.sharing == "net" else block))
        return conv

    def finalize(self, bank: CoefficientBank) -> CoefficientBank:
        """Create each shared tensor at the largest shape its layers need and tie it to them."""
        shapes: Dict[str, Tuple[int, int, int]] = {}
        for conv, key in self._pending:
            needed = conv.coefficient_shape
            current = shapes.get(key, needed)
            shapes[key] = (max(current[0], needed[0]), max(current[1], needed[1]), needed[2])
        tensors = {key: bank.add(key, shape) for key, shape in shapes.items()}
        for conv, key in self._pending:
            conv.attach_shared_coefficients(tensors[key])
        self._finalize_bases(bank)
        self._finalized = True
        return bank

    def _finalize_bases(self, bank: nn.Module) -> None:
        """Shared repetition bases: one ``N(0, 1)`` tensor per scope, sized by its widest layer
        (capped at the base width), registered in ``bank`` as ``base_<scope>`` and tied."""
        shapes: Dict[str, Tuple[int, int, int, int]] = {}
        for conv, key in self._pending_bases:
            needed = conv.base_shape
            current = shapes.get(key, needed)
            if current[2:] != needed[2:]:
                raise ValueError(f"{self.spec.kind}: layers sharing the base of {key!r} have different kernel sizes "
                                 f"{current[2:]} and {needed[2:]}")
            shapes[key] = (max(current[0], needed[0]), max(current[1], needed[1]), *needed[2:])
        bases = {}
        for key, shape in shapes.items():
            parameter = nn.Parameter(torch.randn(shape))
            bank.register_parameter(f"base_{key}", parameter)
            bases[key] = parameter
        for conv, key in self._pending_bases:
            conv.attach_shared_base(bases[key])
