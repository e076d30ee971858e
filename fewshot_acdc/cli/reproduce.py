"""``python -m fewshot_acdc.runs.reproduce RUN_DIR --steps K``: does a recorded run still train
the same way on this code? (fewshot_acdc.runs.reproduce.) Exit 0 when identical, 1 when not (or
on an error), 2 for a bad flag."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from ..config import DEVICES, ConfigError
from .common import USER_ERRORS, ArgumentParser, add_debug_flag, report_error

PROG = "python -m fewshot_acdc.runs.reproduce"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="Re-train a recorded run's first meta-steps on the current "
                                                   "code and compare them with its metrics.jsonl.")
    parser.add_argument("run", metavar="RUN_DIR", help="a run directory (or its record: config.yaml, metrics.jsonl)")
    parser.add_argument("--steps", type=int, required=True, metavar="K", help="meta-steps to re-train and compare")
    parser.add_argument("--data-root", help="where the data is now (default: the recorded data_root, else $FEWSHOT_DATA)")
    parser.add_argument("--episode-dir", help="where the fixed validation episodes are saved")
    parser.add_argument("--device", choices=DEVICES)
    parser.add_argument("--threads", type=int, help="CPU threads for torch (bit-identical needs the recorded count)")
    parser.add_argument("--tolerance", type=float, default=0.0,
                        help="relative difference taken as equal (default 0: exact)")
    parser.add_argument("--work", help="train here and keep it (default: a temporary directory)")
    add_debug_flag(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = {key: value for key, value in (("data_root", args.data_root), ("episode_dir", args.episode_dir),
                                               ("device", args.device), ("threads", args.threads)) if value is not None}
    from ..runs.reproduce import reproduce
    if args.threads is not None:
        import torch
        torch.set_num_threads(args.threads)
    try:
        outcome = reproduce(args.run, args.steps, work_dir=args.work, overrides=overrides, tolerance=args.tolerance)
    except ConfigError as error:
        return report_error(PROG, error, args.debug)
    except USER_ERRORS as error:
        return report_error(PROG, error, args.debug)
    print(outcome.describe())
    return 0 if outcome.identical else 1


if __name__ == "__main__":
    sys.exit(main())
