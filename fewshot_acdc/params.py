"""Parameter accounting: ``python -m fewshot_acdc.params --backbone resnet18 --acdc net --atoms 8``
(``--conv basis --rank 16``, ``--conv dcf --bessel-atoms 6``, ``--conv repeat-net --base-width 32``).

Prints the total and a breakdown by role (shared coefficients, atoms, BN, head, other convs) and,
for each MAML inner-loop scope, how many parameters are adapted per task. ``--conv`` names any
conv kind (``basis``, ``dcf``, ``repeat-net`` ...) instead of ``--acdc``; the fixed bases of
BasisConv and DCF are buffers, not parameters, and are reported separately (``fixed_bases``).
"""
from __future__ import annotations

import sys
from collections import OrderedDict
from typing import Dict, Optional, Sequence

from torch import nn

from .meta.scopes import KIND_SCOPES, SCOPES, adapted_parameter_names
from .models import create_backbone
from .nn import ROLES, BasisConv2d, ConvSpec, DCFConv2d, parameter_roles
from .vocabulary import DEFAULT_CONV_SIZE, conv_for_acdc, conv_kind


def fixed_basis_count(model: nn.Module) -> int:
    """Elements of the fixed (non-trainable) bases: BasisConv filters and DCF Fourier-Bessel atoms."""
    return sum(buffer.numel() for module in model.modules() if isinstance(module, (BasisConv2d, DCFConv2d))
               for buffer in module.buffers(recurse=False))


def parameter_report(model: nn.Module) -> Dict[str, object]:
    """Total, per-role counts and per-scope adapted counts of ``model`` (shared tensors once);
    ``fixed_bases``: elements of the fixed bases, which are buffers and not in ``total``."""
    sizes = {name: p.numel() for name, p in model.named_parameters()}
    roles = parameter_roles(model)
    by_role = OrderedDict((role, 0) for role in ROLES)
    for name, size in sizes.items():
        by_role[roles[name]] += size
    adapted: Dict[str, Optional[int]] = {}
    for scope in SCOPES:
        try:
            adapted[scope] = sum(sizes[name] for name in adapted_parameter_names(model, scope))
        except ValueError:
            adapted[scope] = None  # the scope selects nothing on this backbone
    return {"total": sum(sizes.values()), "by_role": dict(by_role), "adapted_per_task": adapted,
            "fixed_bases": fixed_basis_count(model)}


def few_shot_table(atoms: int = DEFAULT_CONV_SIZE, classes: int = 5) -> str:
    """Markdown table: parameters and parameters adapted per task (scopes all / atoms)."""
    lines = ["| backbone | conv | total | adapted: all | adapted: atoms |", "|---|---|---:|---:|---:|"]
    for acdc in ("none", "net", "block"):
        for backbone in ("conv4", "resnet10", "resnet18", "resnet34"):
            report = parameter_report(create_backbone(backbone, ConvSpec(conv_for_acdc(acdc), atoms), num_classes=classes))
            adapted = report["adapted_per_task"]
            atoms_cell = "n/a" if adapted["atoms"] is None else f"{adapted['atoms']:,}"
            lines.append(f"| {backbone} | {conv_for_acdc(acdc)} | {report['total']:,} | {adapted['all']:,} | {atoms_cell} |")
    return "\n".join(lines)


KINDS_TABLE_KINDS = ("standard", "acdc-net", "basis", "dcf", "repeat-net", "repeat-block", "repeat-layer")


def conv_kinds_table(size: int = DEFAULT_CONV_SIZE, classes: int = 5, backbones=("conv4", "resnet10", "resnet18", "resnet34"),
                     kinds=KINDS_TABLE_KINDS) -> str:
    """Markdown table: trainable and fixed parameters, and parameters adapted per task by each
    kind's own small-part scope (``atoms``, ``coefficients``, ``combination``, ``scales``), every
    decomposed kind at ``size`` (its atoms, rank, Fourier-Bessel atoms or base width)."""
    lines = ["| backbone | conv | trainable | fixed bases | adapted: all | small-part scope | adapted: small part |",
             "|---|---|---:|---:|---:|---|---:|"]
    for kind in kinds:
        scope = KIND_SCOPES.get(ConvSpec(kind).family)
        for backbone in backbones:
            try:
                report = parameter_report(create_backbone(backbone, ConvSpec(kind, size), num_classes=classes))
            except ValueError:  # e.g. dcf with more atoms than a 3x3 kernel has
                lines.append(f"| {backbone} | {kind} | not available with {conv_kind(kind).size_key}={size} | | | | |")
                continue
            adapted = report["adapted_per_task"]
            small = "n/a" if scope is None else f"{adapted[scope]:,}"
            lines.append(f"| {backbone} | {kind} | {report['total']:,} | {report['fixed_bases']:,} | "
                         f"{adapted['all']:,} | {scope or 'n/a'} | {small} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m fewshot_acdc.params``: the command (its flags and its output) is
    fewshot_acdc.cli.params, since only cli/ reads argv."""
    from .cli.params import main as command
    return command(argv)


if __name__ == "__main__":
    sys.exit(main())
