"""What the benchmark scripts share: the configuration grid they sweep and how a report is saved.

Imported as ``benchmarks.common`` (each script puts the repository root on ``sys.path``).
"""
from __future__ import annotations

import itertools
import json
import os
from typing import Dict, Iterator, Optional, Sequence, Tuple

from fewshot_acdc.runs import provenance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a result depends on: the package and the benchmark scripts, not earlier results.
MEASURED_CODE = ("fewshot_acdc", "benchmarks", ":(exclude)benchmarks/results")


def configuration_grid(*axes: Sequence[str], conv_axis: int = 1, scope_axis: int = 2) -> Iterator[Tuple[str, ...]]:
    """The product of ``axes`` (comma-separated strings or sequences), in order, without the
    combinations of a standard convolution with a scope other than ``all`` (a standard conv has
    no atoms, coefficients or other role to adapt alone)."""
    values = [axis.split(",") if isinstance(axis, str) else list(axis) for axis in axes]
    for combination in itertools.product(*values):
        if combination[conv_axis] == "standard" and combination[scope_axis] != "all":
            continue
        yield combination


def random_episode(generator, image_size: int, ways: int = 5, shots: int = 1, queries: int = 15, device="cpu"):
    """A 5-way 1-shot (by default) episode of standard-normal images drawn from ``generator``:
    support images, then query images, labels class-major. Benchmarks time and count the same
    computation whatever the pixels are; every script draws them this one way."""
    import torch  # here, not at the top: the grid drivers stay free of torch

    from fewshot_acdc.meta import Episode
    sets = []
    for per_class in (shots, queries):
        labels = torch.arange(ways).repeat_interleave(per_class)
        images = torch.randn(labels.numel(), 3, image_size, image_size, generator=generator)
        sets += [images.to(device), labels.to(device)]
    return Episode(*sets)


def created_now() -> str:
    return provenance.created_now()


def source_revision(root: str = ROOT) -> Dict[str, Optional[object]]:
    """The git commit the measured code comes from, and whether that code (package and benchmark
    scripts) had uncommitted changes; ``None`` for both outside a git checkout."""
    return provenance.source_revision(root, MEASURED_CODE)


# The code a benchmark measures is the code when it started: a commit made while it runs (they
# take up to an hour) must not be recorded as its source. Each script imports this module first.
_REVISION_AT_START: Optional[Dict[str, Optional[object]]] = None


def revision_at_start() -> Dict[str, Optional[object]]:
    global _REVISION_AT_START
    if _REVISION_AT_START is None:
        _REVISION_AT_START = source_revision()
    return _REVISION_AT_START


def save_report(report: Dict, path: str) -> None:
    """Write ``report`` as indented JSON to ``path`` (folders created) and say where; the code's
    revision when the script started (:func:`revision_at_start`, else :func:`source_revision` now)
    is added as ``source`` unless the report has one."""
    report = {**report, "source": report.get("source") or revision_at_start()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(report, handle, indent=1)
    print(f"saved {path}")
