"""``python -m fewshot_acdc.params`` (``fewshot-params``): parameter accounting of a backbone from
the command line; the counting is fewshot_acdc.params."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from .. import params
from ..models import create_backbone, list_backbones
from ..nn import CONV_KINDS, ConvSpec
from ..params import conv_kinds_table, few_shot_table, parameter_report
from ..vocabulary import ACDC_SHARINGS, DEFAULT_CONV_SIZE, SIZE_KEYS, conv_for_acdc, conv_kind
from .common import add_size_flags


def _format(count: Optional[int]) -> str:
    if count is None:
        return "n/a"
    return f"{count:,} ({count / 1e6:.2f}M)"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fewshot_acdc.params", description=params.__doc__.split("\n\n")[0])
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
