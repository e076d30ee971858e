"""Parameter accounting: ``python -m fewshot_acdc.params --backbone resnet18 --acdc net --atoms 8``
(``--conv basis --rank 16``, ``--conv dcf --bessel-atoms 6``, ``--conv repeat-net --base-width 32``).

Prints the total and a breakdown by role (shared coefficients, atoms, BN, head, other convs) and,
for each MAML inner-loop scope, how many parameters are adapted per task. ``--conv`` names any
conv kind (``basis``, ``dcf``, ``repeat-net`` ...) instead of ``--acdc``; the fixed bases of
BasisConv and DCF are buffers, not parameters, and are reported separately (``fixed_bases``).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from typing import Dict, Optional, Sequence

from torch import nn

from .meta.scopes import KIND_SCOPES, SCOPES, adapted_parameter_names
from .models import create_backbone, list_backbones
from .nn import CONV_KINDS, ROLES, BasisConv2d, ConvSpec, DCFConv2d, parameter_roles
from .cli.common import add_size_flags
from .vocabulary import ACDC_SHARINGS, DEFAULT_CONV_SIZE, SIZE_KEYS, conv_for_acdc, conv_kind


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


def _format(count: Optional[int]) -> str:
    if count is None:
        return "n/a"
    return f"{count:,} ({count / 1e6:.2f}M)"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fewshot_acdc.params", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet18", help=f"one of: {', '.join(list_backbones())}")
    parser.add_argument("--acdc", default="net", help=f"one of: {', '.join(ACDC_SHARINGS)}")
    parser.add_argument("--conv", default=None, choices=CONV_KINDS,
                        help="conv kind; overrides --acdc (basis, dcf, repeat-net, repeat-block, repeat-layer ...)")
    add_size_flags(parser)
    parser.add_argument("--group-size", type=int, default=None)
    parser.add_argument("--classes", type=int, default=5, help="outputs of the linear head")
    parser.add_argument("--image-size", type=int, default=84, help="only Conv4's head depends on it")
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--table", action="store_true",
                        help="print the Markdown table of the few-shot backbones x {none, net, block} (README)")
    parser.add_argument("--kinds-table", action="store_true",
                        help="print the Markdown table of the few-shot backbones x conv kinds (docs/conv_kinds.md)")
    args = parser.parse_args(argv)
    sizes = {key: getattr(args, key) for key in SIZE_KEYS}
    if args.table or args.kinds_table:  # tables over kinds: one size for all of them
        given = [value for value in sizes.values() if value is not None]
        if len(given) > 1:
            parser.error("the tables size every kind alike: give one of " + ", ".join(f"--{k.replace('_', '-')}" for k in SIZE_KEYS))
        size = given[0] if given else DEFAULT_CONV_SIZE
        print(few_shot_table(size, args.classes) if args.table else conv_kinds_table(size, args.classes))
        return 0
    try:
        kind = args.conv if args.conv is not None else conv_for_acdc(args.acdc)
        spec = ConvSpec.sized(kind, group_size=args.group_size, **sizes)
        model = create_backbone(args.backbone, spec, num_classes=args.classes, image_size=args.image_size,
                                in_channels=args.in_channels)
    except ValueError as error:
        parser.error(str(error))
    report = parameter_report(model)
    size_key = conv_kind(kind).size_key
    report = {"backbone": args.backbone, "conv": kind, "size_key": size_key, "size": spec.size,
              "group_size": args.group_size, "classes": args.classes, **report}
    if args.json:
        print(json.dumps(report))
        return 0
    sized = f", {size_key} {spec.size}" if size_key else ""
    print(f"{args.backbone}, conv {report['conv']}{sized}, group size {args.group_size}, "
          f"{args.classes} classes")
    print(f"  total parameters      {_format(report['total'])}")
    labels = {"coefficients": "ACDC/DCF coefficients", "atoms": "ACDC atoms", "combination": "basis combinations",
              "base": "repetition bases", "scales": "repetition scales", "conv": "ordinary convs",
              "norm": "batch norm", "head": "linear head", "other": "other"}
    for role, count in report["by_role"].items():
        if count or role in ("conv", "norm", "head") or role in conv_kind(kind).roles:
            print(f"    {labels[role]:<24}{_format(count)}")
    if report["fixed_bases"]:
        print(f"  fixed bases (buffers, not trained) {_format(report['fixed_bases'])}")
    print("  adapted per task by MAML scope")
    for scope, count in report["adapted_per_task"].items():
        base = report["adapted_per_task"].get(scope.split("+")[0])
        if scope in ("all", "atoms", "head", "atoms+head") or (count is not None and base is not None):
            print(f"    {scope:<24}{_format(count)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
