"""``python -m fewshot_acdc.cli.convert --run <dir> --rank R``: a trained standard-conv run to BasisConv.

Examples::

    python -m fewshot_acdc.cli.convert --run runs/builtin-conv4-none-all-5w1s-seed0 --rank 16
    python -m fewshot_acdc.cli.convert --run runs/<run> --energy 0.9 --evaluate 200   # also score both models

Every 3x3 convolution of the body becomes fixed basis filters (its truncated eigen-decomposition)
and a learned 1x1 combination; the per-layer and total relative reconstruction errors are printed
and written as JSON next to the converted checkpoint (default ``<run>/basisconv/``).
"""
from __future__ import annotations

import json
import sys
from typing import Optional, Sequence

from ..config import DEVICES
from .common import USER_ERRORS, ArgumentParser, add_debug_flag, report_error


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m fewshot_acdc.cli.convert",
                            description="Convert a trained standard-conv run to BasisConv (truncated eigen-decomposition).")
    parser.add_argument("--run", required=True, help="run directory written by run_maml.py (conv kind standard)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--rank", type=int, help="basis filters per layer (capped at min(C_out, C_in*k*k))")
    size.add_argument("--energy", type=float, help="fraction in (0, 1] of each layer's squared singular values to keep")
    parser.add_argument("--out", help="converted checkpoint path (default <run>/basisconv/<checkpoint>-rank<R>.pt)")
    parser.add_argument("--evaluate", type=int, metavar="EPISODES",
                        help="also score the original and converted models on this many fixed test episodes")
    parser.add_argument("--data-root")
    parser.add_argument("--device", choices=DEVICES, default="cpu")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    add_debug_flag(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from ..runs.conversion import convert_run, format_result
    try:
        result = convert_run(args.run, checkpoint=args.checkpoint, rank=args.rank, energy=args.energy, out=args.out,
                             evaluate_episodes=args.evaluate, data_root=args.data_root, device=args.device)
    except USER_ERRORS as error:  # CheckpointError, data and output errors
        return report_error("convert", error, args.debug)
    print(json.dumps(result) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
