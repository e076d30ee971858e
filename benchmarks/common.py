"""What the benchmark scripts share: the configuration grid they sweep and how a report is saved.

Imported as ``benchmarks.common`` (each script puts the repository root on ``sys.path``).
"""
from __future__ import annotations

import datetime
import itertools
import json
import os
from typing import Dict, Iterator, Sequence, Tuple


def configuration_grid(*axes: Sequence[str], conv_axis: int = 1, scope_axis: int = 2) -> Iterator[Tuple[str, ...]]:
    """The product of ``axes`` (comma-separated strings or sequences), in order, without the
    combinations of a standard convolution with a scope other than ``all`` (a standard conv has
    no atoms, coefficients or other role to adapt alone)."""
    values = [axis.split(",") if isinstance(axis, str) else list(axis) for axis in axes]
    for combination in itertools.product(*values):
        if combination[conv_axis] == "standard" and combination[scope_axis] != "all":
            continue
        yield combination


def created_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def save_report(report: Dict, path: str) -> None:
    """Write ``report`` as indented JSON to ``path`` (folders created) and say where."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(report, handle, indent=1)
    print(f"saved {path}")
