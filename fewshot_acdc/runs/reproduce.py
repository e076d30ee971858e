"""Re-train a recorded run's first steps on the current code and compare with its record.

``python -m fewshot_acdc.runs.reproduce RUN_DIR --steps K`` reads the run's ``config.yaml``
through the one migration (:func:`fewshot_acdc.config.load_saved_config`, what resuming and the
results module read), trains it afresh in a scratch directory for ``K`` meta-steps, and compares
every ``metrics.jsonl`` line up to step ``K`` with the recorded one: "identical", or the first
step, key and the two values that differ. Wall-clock times and memory are not compared.

A run resumed with changes (``config_changes`` in its summary) is re-trained with the values it
started with, and compared only up to the step before the first change. The comparison is exact
by default: a recorded run is reproducible on the same kind of machine and thread count bit for
bit (docs/run_directory.md), so any difference is a change in what training does.
"""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ..config import load_saved_config
from .directory import RunDirectory, parse_metrics

#: Keys of a metrics line that measure the machine, not the training.
UNCOMPARED = ("seconds", "seconds_interval", "seconds_per_step", "seconds_epoch", "peak_memory_mb")


class _Reached(Exception):
    """Raised from ``on_step`` once the steps to compare have been trained."""


@dataclass(frozen=True)
class Reproduction:
    """The outcome: ``identical`` over ``steps`` steps (``lines`` metrics lines compared), or the
    first ``step``, ``key`` and the ``recorded`` and ``reproduced`` values that differ."""

    run: str
    steps: int
    lines: int
    identical: bool
    step: Optional[int] = None
    key: Optional[str] = None
    recorded: Any = None
    reproduced: Any = None
    note: Optional[str] = None

    def describe(self) -> str:
        head = f"{self.run}: first {self.steps} meta-step(s)"
        note = f" ({self.note})" if self.note else ""
        if self.identical:
            return f"{head}: identical ({self.lines} metrics line(s) compared){note}"
        return (f"{head}: differ at step {self.step}: {self.key} recorded {self.recorded!r}, reproduced "
                f"{self.reproduced!r}{note}")


def initial_config_values(config: Dict[str, Any], changes: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The values a run started with: its final config with each resume change undone (the
    first change of a key holds the value before it)."""
    values = dict(config)
    for change in reversed(changes):
        values[change["key"]] = change["from"]
    return values


def reproduce(run_dir: Union[str, Path], steps: int, *, work_dir: Optional[Union[str, Path]] = None,
              overrides: Optional[Dict[str, Any]] = None, tolerance: float = 0.0) -> Reproduction:
    """Train ``run_dir``'s recorded config for ``steps`` meta-steps in ``work_dir`` (default a
    temporary directory, removed afterwards) and compare the metrics lines. ``overrides``: where
    the data is and what runs it (``data_root``, ``episode_dir``, ``device``, ``threads``).
    ``tolerance``: the relative difference of numbers taken as equal (default 0: exact)."""
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    run = RunDirectory(run_dir)
    recorded = run.read_metrics()
    if not recorded:
        raise ValueError(f"{run.metrics} holds no metrics lines to compare with")
    changes = _config_changes(run)
    config = load_saved_config(run.config)
    note = None
    if changes:
        first = min(change["from_iteration"] for change in changes)
        started = initial_config_values(config.to_dict(), changes)
        config = config.replace(**{change["key"]: started[change["key"]] for change in changes})
        if steps >= first:
            note = f"compared up to step {first - 1}: a resume changed {', '.join(c['key'] for c in changes)} from step {first}"
            steps = first - 1
            if steps < 1:
                raise ValueError(f"{run.root} was changed on resume from step {first}: nothing to compare")
    config = config.replace(**(overrides or {}))
    last_recorded = max(line.get("iteration", 0) for line in recorded)
    if steps > min(config.iterations, last_recorded):
        raise ValueError(f"{run.root} recorded {last_recorded} of {config.iterations} meta-steps; "
                         f"--steps {steps} asks for more")

    def stop(iteration: int) -> None:
        if iteration >= steps:
            raise _Reached

    from .training import train
    with tempfile.TemporaryDirectory(prefix="reproduce-") as scratch:
        target = Path(work_dir) if work_dir is not None else Path(scratch) / "run"
        try:
            train(config, target, progress=False, on_step=stop, allow_dirty=True)  # records nothing that lasts
        except _Reached:
            pass
        reproduced = RunDirectory(target).read_metrics()
    return compare_metrics(str(run.root), recorded, reproduced, steps, tolerance, note)


def compare_metrics(name: str, recorded: List[Dict[str, Any]], reproduced: List[Dict[str, Any]], steps: int,
                    tolerance: float = 0.0, note: Optional[str] = None) -> Reproduction:
    """The first difference between the recorded and reproduced lines up to ``steps``."""
    by_step = {line.get("iteration"): line for line in recorded}
    compared = 0
    for line in reproduced:
        step = line.get("iteration")
        if step is None or step > steps:
            continue
        old = by_step.get(step)
        if old is None:
            return Reproduction(name, steps, compared, False, step, "iteration", None, step, note)
        for key in sorted(set(old) | set(line)):
            if key in UNCOMPARED:
                continue
            if not _equal(old.get(key), line.get(key), tolerance):
                return Reproduction(name, steps, compared, False, step, key, old.get(key), line.get(key), note)
        compared += 1
    missing = [step for step in by_step if step is not None and step <= steps
               and step not in {line.get("iteration") for line in reproduced}]
    if missing:
        return Reproduction(name, steps, compared, False, min(missing), "iteration", min(missing), None, note)
    return Reproduction(name, steps, compared, True, note=note)


def _equal(a: Any, b: Any, tolerance: float) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k], tolerance) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y, tolerance) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return a == b or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= tolerance * max(abs(a), abs(b)))
    return a == b


def _config_changes(run: RunDirectory) -> List[Dict[str, Any]]:
    try:
        summary = json.loads(run.summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    changes = summary.get("config_changes") if isinstance(summary, dict) else None
    return [c for c in changes if isinstance(c, dict) and {"key", "from", "from_iteration"} <= c.keys()] \
        if isinstance(changes, list) else []


if __name__ == "__main__":  # only fewshot_acdc.cli reads argv
    import sys

    from ..cli.reproduce import main
    sys.exit(main())
