"""Model surgery: turn a trained standard-conv backbone into BasisConv (:class:`~.basis.BasisConv2d`).

Every factory-built convolution ``W`` (flattened ``(C_out, C_in*kh*kw)``, ``W = U S V^T``) becomes
a BasisConv layer with the truncated eigen-decomposition of its filters as fixed basis
(``V_r^T``, the top ``r`` right singular vectors, i.e. eigenvectors of ``W^T W``) and
``A = U_r S_r`` as learned combination: the best rank-``r`` approximation of ``W`` in the
Frobenius norm, with relative error ``sqrt(sum_{i>r} s_i^2 / sum_i s_i^2)``.

It lives apart from the layer (``nn/basis.py``) because it walks and rewrites whole models and
names the conv factory's :class:`~.factory.ConvSpec`; the layer file then imports nothing of
the factory, and the factory imports the layer without a cycle. Command line
(``python -m fewshot_acdc.cli.convert``): :mod:`fewshot_acdc.runs.conversion`.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from .basis import BasisConv2d
from .factory import ConvSpec

__all__ = ["BasisConversionReport", "LayerConversion", "convert_to_basisconv", "decomposable_convolutions"]


@dataclass
class LayerConversion:
    """One converted convolution: its truncation and what it costs."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: Tuple[int, int]
    rank: int
    full_rank: int                 # min(C_out, C_in*kh*kw): the rank that reconstructs exactly
    relative_error: float          # ||W - W_r||_F / ||W||_F
    energy_kept: float             # sum_{i<=r} s_i^2 / sum_i s_i^2
    parameters_before: int         # C_out*C_in*kh*kw (+ bias)
    trainable_after: int           # C_out*r (+ bias)
    fixed_after: int               # r*C_in*kh*kw


@dataclass
class BasisConversionReport:
    """Per-layer and total reconstruction error of :func:`convert_to_basisconv`.

    ``total_relative_error`` is ``sqrt(sum_l ||W_l - W_l,r||^2 / sum_l ||W_l||^2)`` over the
    converted layers (the relative error of all their weights as one vector).
    """

    layers: List[LayerConversion] = field(default_factory=list)
    total_relative_error: float = 0.0
    rank: Optional[int] = None
    energy: Optional[float] = None

    @property
    def ranks(self) -> Dict[str, int]:
        return {layer.name: layer.rank for layer in self.layers}

    def to_dict(self) -> Dict[str, object]:
        return {
            "rank": self.rank, "energy": self.energy, "total_relative_error": self.total_relative_error,
            "parameters_before": sum(layer.parameters_before for layer in self.layers),
            "trainable_after": sum(layer.trainable_after for layer in self.layers),
            "fixed_after": sum(layer.fixed_after for layer in self.layers),
            "layers": [{**asdict(layer), "kernel_size": list(layer.kernel_size)} for layer in self.layers],
        }

    def format(self) -> str:
        """A plain-text table, one line per layer and a total."""
        header = f"{'layer':<28}{'shape':>22}{'rank':>7}{'of':>6}{'rel. error':>12}{'energy':>9}{'trainable':>11}"
        lines = [header, "-" * len(header)]
        for layer in self.layers:
            shape = f"{layer.out_channels}x{layer.in_channels}x{layer.kernel_size[0]}x{layer.kernel_size[1]}"
            lines.append(f"{layer.name:<28}{shape:>22}{layer.rank:>7}{layer.full_rank:>6}"
                         f"{layer.relative_error:>12.4f}{layer.energy_kept:>9.4f}{layer.trainable_after:>11,}")
        before = sum(layer.parameters_before for layer in self.layers)
        after = sum(layer.trainable_after for layer in self.layers)
        fixed = sum(layer.fixed_after for layer in self.layers)
        lines.append("-" * len(header))
        lines.append(f"total relative reconstruction error {self.total_relative_error:.4f} over {len(self.layers)} "
                     f"layers; their weights: {before:,} -> {after:,} trainable + {fixed:,} fixed")
        return "\n".join(lines)


def decomposable_convolutions(model: nn.Module) -> List[Tuple[str, nn.Conv2d]]:
    """The ordinary convolutions the conv factory built (tagged ``factory_block``), in order.

    The stem and the 1x1 shortcuts are not factory-built and stay ordinary, as in every conv kind.
    """
    return [(name, module) for name, module in model.named_modules()
            if type(module) is nn.Conv2d and getattr(module, "factory_block", None) is not None]


def _choose_rank(singular_values: torch.Tensor, rank: Optional[int], energy: Optional[float]) -> int:
    full = singular_values.numel()
    if rank is not None:
        return min(rank, full)
    squared = singular_values.double().square()
    kept = torch.cumsum(squared, 0) / squared.sum().clamp_min(1e-300)
    # The smallest r whose kept energy reaches the target (tolerance for rounding at energy=1).
    return min(full, int((kept < energy - 1e-12).sum().item()) + 1)


def convert_to_basisconv(
    backbone: nn.Module,
    rank: Union[int, Mapping[str, int], None] = None,
    *,
    energy: Optional[float] = None,
) -> Tuple[nn.Module, BasisConversionReport]:
    """Turn a trained standard-conv backbone into BasisConv by truncated eigen-decomposition.

    Every factory-built convolution (every 3x3 conv of the body; not the stem or the 1x1
    shortcuts) with flattened kernel ``W = U S V^T`` becomes a :class:`BasisConv2d` with fixed
    basis ``V_r^T`` and combination ``U_r S_r``. The input model is not modified.

    Args:
        rank: basis filters per layer (an int for every layer, or ``{layer name: r}``); capped
            at ``min(C_out, C_in*kh*kw)``, where the reconstruction is exact.
        energy: instead of ``rank``, the fraction in ``(0, 1]`` of each layer's squared
            singular values to keep (the smallest such rank per layer).

    Returns:
        ``(converted copy, report)``; ``report.ranks`` feeds ``rank=`` to rebuild the same
        architecture (e.g. before loading a saved converted state dict).
    """
    if (rank is None) == (energy is None):
        raise ValueError("give exactly one of rank (basis filters per layer) or energy (fraction of energy kept)")
    if energy is not None and not (isinstance(energy, (int, float)) and not isinstance(energy, bool) and 0 < energy <= 1):
        raise ValueError(f"energy must be a fraction in (0, 1], got {energy!r}")
    if isinstance(rank, Mapping):
        for name, value in rank.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"rank for layer {name!r} must be an integer >= 1, got {value!r}")
    elif rank is not None and (not isinstance(rank, int) or isinstance(rank, bool) or rank < 1):
        raise ValueError(f"rank must be an integer >= 1 or a mapping of layer names to ranks, got {rank!r}")
    decomposed = [type(m).__name__ for m in backbone.modules()
                  if type(m).__name__ in ("ACDCConv2d", "BasisConv2d", "DCFConv2d", "RepeatedConv2d")]
    if decomposed:
        raise ValueError(f"convert_to_basisconv needs a standard-conv backbone; this one has {decomposed[0]} layers")
    model = copy.deepcopy(backbone)
    targets = decomposable_convolutions(model)
    if not targets:
        raise ValueError("no factory-built convolution found to convert (build the backbone with create_backbone)")
    if isinstance(rank, Mapping):
        unknown = sorted(set(rank) - {name for name, _ in targets})
        missing = [name for name, _ in targets if name not in rank]
        if unknown or missing:
            raise ValueError(f"rank mapping does not match the model's convolutions: unknown {unknown}, missing {missing}")
    report = BasisConversionReport(rank=rank if isinstance(rank, int) else None, energy=energy)
    error_squared, norm_squared = 0.0, 0.0
    for name, conv in targets:
        if conv.groups != 1:
            raise ValueError(f"{name}: grouped convolutions (groups={conv.groups}) cannot be converted")
        weight = conv.weight.detach()
        flat = weight.reshape(weight.shape[0], -1).double()
        u, s, vh = torch.linalg.svd(flat, full_matrices=False)
        wanted = rank[name] if isinstance(rank, Mapping) else rank
        r = _choose_rank(s, wanted, energy)
        basis = vh[:r].reshape(r, *weight.shape[1:])
        combination = u[:, :r] * s[:r]
        layer = BasisConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                            conv.dilation, conv.bias is not None, basis=basis.to(weight.dtype))
        with torch.no_grad():
            layer.combination.copy_(combination.to(weight.dtype))
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        layer = layer.to(weight.device)
        layer.factory_block = conv.factory_block
        residual = (flat - combination @ vh[:r]).norm() ** 2
        total = flat.norm() ** 2
        error_squared += float(residual)
        norm_squared += float(total)
        kernel_h, kernel_w = conv.kernel_size
        bias_count = conv.out_channels if conv.bias is not None else 0
        report.layers.append(LayerConversion(
            name=name, in_channels=conv.in_channels, out_channels=conv.out_channels,
            kernel_size=(kernel_h, kernel_w), rank=r, full_rank=s.numel(),
            relative_error=math.sqrt(float(residual) / max(float(total), 1e-300)),
            energy_kept=float(s[:r].square().sum() / s.square().sum().clamp_min(1e-300)),
            parameters_before=weight.numel() + bias_count,
            trainable_after=conv.out_channels * r + bias_count,
            fixed_after=r * conv.in_channels * kernel_h * kernel_w,
        ))
        parent_name, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attribute, layer)
    report.total_relative_error = math.sqrt(error_squared / max(norm_squared, 1e-300))
    if hasattr(model, "conv_spec"):
        model.conv_spec = ConvSpec("basis", size=max(report.ranks.values()))
    return model, report
