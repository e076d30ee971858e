"""The flags every experiment grid script shares (where the data is, the device, a dry run, and the
opt-in to record from uncommitted code), said once."""
from __future__ import annotations

import argparse
from typing import Dict


def add_grid_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", help="folder holding the dataset (default: $FEWSHOT_DATA, else ./data)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and their state, run nothing")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="record results although the package code has uncommitted changes (the records say so "
                             "and keep a sha256 of the diff)")


def common_overrides(args: argparse.Namespace) -> Dict[str, object]:
    """The config overrides every cell of the grid gets from those flags."""
    return {"device": args.device, **({"data_root": args.data_root} if args.data_root else {})}
