"""Parameter accounting: ``python -m fewshot_acdc.params --backbone resnet18 --acdc net --atoms 8``.

Prints the total and a breakdown by role (shared coefficients, atoms, BN, head, other convs) and,
for each MAML inner-loop scope, how many parameters are adapted per task.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from typing import Dict, Optional, Sequence

from torch import nn

from .meta.scopes import SCOPES, adapted_parameter_names
from .models import create_backbone, list_backbones
from .nn import ROLES, parameter_roles

ACDC_CHOICES = ("none", "net", "block", "layer", "g-net", "g-block", "g-layer")


def conv_kind(acdc: str) -> str:
    """CLI ``--acdc`` value -> conv kind of the factory (``none`` -> ``standard``)."""
    if acdc not in ACDC_CHOICES:
        raise ValueError(f"unknown --acdc value {acdc!r}; accepted: {', '.join(ACDC_CHOICES)}")
    return "standard" if acdc == "none" else f"acdc-{acdc}"


def parameter_report(model: nn.Module) -> Dict[str, object]:
    """Total, per-role counts and per-scope adapted counts of ``model`` (shared tensors once)."""
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
    return {"total": sum(sizes.values()), "by_role": dict(by_role), "adapted_per_task": adapted}


def few_shot_table(atoms: int = 8, classes: int = 5) -> str:
    """Markdown table: parameters and parameters adapted per task (scopes all / atoms)."""
    lines = ["| backbone | conv | total | adapted: all | adapted: atoms |", "|---|---|---:|---:|---:|"]
    for acdc in ("none", "net", "block"):
        for backbone in ("conv4", "resnet10", "resnet18", "resnet34"):
            report = parameter_report(create_backbone(backbone, conv_kind(acdc), atoms=atoms, num_classes=classes))
            adapted = report["adapted_per_task"]
            atoms_cell = "n/a" if adapted["atoms"] is None else f"{adapted['atoms']:,}"
            lines.append(f"| {backbone} | {conv_kind(acdc)} | {report['total']:,} | {adapted['all']:,} | {atoms_cell} |")
    return "\n".join(lines)


def _format(count: Optional[int]) -> str:
    if count is None:
        return "n/a"
    return f"{count:,} ({count / 1e6:.2f}M)"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fewshot_acdc.params", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet18", help=f"one of: {', '.join(list_backbones())}")
    parser.add_argument("--acdc", default="net", help=f"one of: {', '.join(ACDC_CHOICES)}")
    parser.add_argument("--atoms", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=None)
    parser.add_argument("--classes", type=int, default=5, help="outputs of the linear head")
    parser.add_argument("--image-size", type=int, default=84, help="only Conv4's head depends on it")
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--table", action="store_true",
                        help="print the Markdown table of the few-shot backbones x {none, net, block} (README)")
    args = parser.parse_args(argv)
    if args.table:
        print(few_shot_table(args.atoms, args.classes))
        return 0
    try:
        model = create_backbone(args.backbone, conv_kind(args.acdc), atoms=args.atoms, group_size=args.group_size,
                                num_classes=args.classes, image_size=args.image_size, in_channels=args.in_channels)
    except ValueError as error:
        parser.error(str(error))
    report = parameter_report(model)
    report = {"backbone": args.backbone, "conv": conv_kind(args.acdc), "atoms": args.atoms,
              "group_size": args.group_size, "classes": args.classes, **report}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.backbone}, conv {report['conv']}, atoms {args.atoms}, group size {args.group_size}, "
          f"{args.classes} classes")
    print(f"  total parameters      {_format(report['total'])}")
    labels = {"coefficients": "ACDC coefficients", "atoms": "ACDC atoms", "conv": "ordinary convs",
              "norm": "batch norm", "head": "linear head", "other": "other"}
    for role, count in report["by_role"].items():
        print(f"    {labels[role]:<20}{_format(count)}")
    print("  adapted per task by MAML scope")
    for scope, count in report["adapted_per_task"].items():
        print(f"    {scope:<20}{_format(count)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
