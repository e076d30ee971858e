"""The comparison table: one row per backbone x conv kind x adapt scope, one accuracy column per
shot count (5-way 1-shot and 5-way 5-shot by default).

How runs become rows and cells (the rule is also in ``docs/results.md``):

* A row is identified by :class:`RowKey` = (dataset, backbone, conv, size, group_size, adapt,
  first_order, head_init). In the usual sweep dataset/size/first_order are fixed, so this is
  exactly backbone x conv x adapt; runs that differ in those fields get separate rows instead of
  being merged. ``size`` is the kind's size (ACDC atoms, BasisConv rank, DCF Fourier-Bessel
  atoms, repetition base width; None for standard convolutions), ``group_size`` only counts for
  grouped ACDC ones.
* The ``k``-shot cell of a row takes the evaluation ``eval/<split>_<ways>way_<k>shot.json`` of a
  run of that row that was *trained* with ``shots == k`` (``summary.json``, else
  ``config.yaml``).
* Evaluations at another shot count than the run trained with ("cross-shot": trained 1-shot,
  evaluated 5-shot) are a different protocol, so they never stand in for a run trained k-shot
  and are never paired in comparisons. They are not hidden either: every one is listed in
  ``ResultsTable.cross_shot``, and a cell that no run trained k-shot fills shows the row's one
  cross-shot evaluation at k shots, with status ``cross-shot`` and the training shot count
  (``Cell.trained_shots``), so every rendering labels it.
* Runs of one row trained at one shot count that differ in a training setting
  (:data:`VARIANT_SETTINGS`: step sizes, inner steps, meta-steps, ...) are different experiments
  (an ablation), so each setting gets a row of its own: :attr:`RowKey.variant` names the settings
  in which its runs differ from the group's most common value (``iterations=2000``,
  ``inner_lr.atoms=0.0005``); the runs with the common values keep the plain row.
* If more than one run qualifies for a cell with the same settings (seeds of one setting), the
  cell is a *conflict*: no number is picked, the candidates are listed in
  ``ResultsTable.problems`` with their accuracies. Pass only the run you mean (e.g. one seed) to
  resolve it.
* Only finished runs (status ``ok``) fill cells, unless ``include_unfinished=True``, in which
  case unfinished runs that already have an evaluation fill cells marked as such.
* Parameter counts come from ``summary.json`` of the runs that fill the row's cells; if they
  disagree the row shows no single number and says why. Time per meta-step and peak memory are
  per cell (the 1-shot and the 5-shot run are different trainings), so each has one value per
  shot count.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..config import VARIANT_KEYS, TrainConfig
from ..vocabulary import CONV_KIND_TABLE, check_role_learning_rates
from .runs import (
    STATUS_OK,
    STATUS_UNFINISHED,
    EvalResult,
    RunRecord,
    is_acdc_conv,
    is_decomposed_conv,
)

CELL_OK = "ok"
CELL_MISSING = "missing"
CELL_CONFLICT = "conflict"
CELL_CROSS = "cross-shot"

_BACKBONE_NAMES = {"resnet": "ResNet", "conv": "Conv", "wrn": "WRN", "wideresnet": "WideResNet"}


def backbone_depth(backbone: str | None) -> int | None:
    """Trailing number of a backbone name (``resnet18`` -> 18), or ``None``."""
    if not backbone:
        return None
    m = re.search(r"(\d+)$", backbone)
    return int(m.group(1)) if m else None


def backbone_label(backbone: str | None) -> str:
    if not backbone:
        return "?"
    m = re.match(r"^([a-z_-]+?)[-_]?(\d+)$", backbone)
    if m and m.group(1) in _BACKBONE_NAMES:
        return f"{_BACKBONE_NAMES[m.group(1)]}{m.group(2)}"
    return backbone


# Readable names of the non-ACDC conv kinds, and how each size setting reads in a label.
_KIND_LABELS = {"basis": "BasisConv", "dcf": "DCF (Fourier-Bessel)", "repeat-net": "Repetition-net",
                "repeat-block": "Repetition-block", "repeat-layer": "Repetition-layer"}
_SIZE_LABELS = {"atoms": "{} atoms", "rank": "rank {}", "bessel_atoms": "{} atoms", "base_width": "base width {}"}


def _size_label(conv: str, size: int) -> str:
    key = CONV_KIND_TABLE[conv].size_key if conv in CONV_KIND_TABLE else None
    return _SIZE_LABELS.get(key, "size {}").format(size)


def conv_label(conv: str | None, size: int | None = None, group_size: int | None = None) -> str:
    """``ACDC-net (8 atoms)``, ``BasisConv (rank 16)``, ``DCF (Fourier-Bessel) (8 atoms)``,
    ``Repetition-net (base width 32)``, ``standard``."""
    if not conv:
        return "?"
    label = "ACDC" + conv[4:] if is_acdc_conv(conv) else _KIND_LABELS.get(conv, conv)
    extras = []
    if size is not None:
        extras.append(_size_label(conv, size))
    if group_size is not None:
        extras.append(f"group size {group_size}")
    return f"{label} ({', '.join(extras)})" if extras else label


@dataclass(frozen=True)
class RowKey:
    dataset: str | None
    backbone: str | None
    conv: str | None
    size: int | None
    group_size: int | None
    adapt: str | None
    first_order: bool
    head_init: str = "per-class"
    variant: str = ""  # the training settings that set this row's runs apart (module docstring)

    @classmethod
    def from_run(cls, run: RunRecord, variant: str = "") -> "RowKey":
        i = run.identity
        return cls(i.dataset, i.backbone, i.conv, i.size, i.group_size, i.adapt, i.first_order, i.head_init,
                   variant)

    @property
    def depth(self) -> int | None:
        return backbone_depth(self.backbone)

    @property
    def is_acdc(self) -> bool:
        return is_acdc_conv(self.conv)

    @property
    def is_decomposed(self) -> bool:
        """Any conv kind but standard (ACDC, BasisConv, DCF, repetition)."""
        return is_decomposed_conv(self.conv)

    @property
    def backbone_label(self) -> str:
        return backbone_label(self.backbone)

    @property
    def conv_label(self) -> str:
        return conv_label(self.conv, self.size, self.group_size)

    @property
    def method_label(self) -> str:
        """``MAML`` / ``MAML + ACDC-net (8 atoms)`` (``FO-MAML`` for first-order runs)."""
        base = "FO-MAML" if self.first_order else "MAML"
        return f"{base} + {self.conv_label}" if self.is_decomposed else base

    @property
    def label(self) -> str:
        """Human label of the row, e.g. ``ResNet18 · MAML + ACDC-net (8 atoms) · adapt all``
        (unique within one dataset; the dataset is reported separately)."""
        parts = [self.backbone_label, self.method_label]
        if not self.is_decomposed and self.conv not in (None, "standard"):
            parts[-1] += f" ({self.conv})"
        parts.append(f"adapt {self.adapt}" + (", shared head" if self.head_init == "shared" else ""))
        if self.variant:
            parts.append(self.variant)
        return " · ".join(parts)

    def sort_key(self) -> tuple:
        depth = self.depth
        family = re.sub(r"\d+$", "", self.backbone or "")
        return (
            self.dataset or "~",
            family,
            depth if depth is not None else 10**9,
            self.backbone or "",
            self.is_decomposed,
            self.conv or "",
            self.size if self.size is not None else -1,
            self.group_size if self.group_size is not None else -1,
            self.adapt != "all",
            self.adapt or "",
            self.first_order,
            self.head_init,
            self.variant,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "backbone": self.backbone,
            "conv": self.conv,
            "size": self.size,
            "group_size": self.group_size,
            "adapt": self.adapt,
            "first_order": self.first_order,
            "head_init": self.head_init,
            "variant": self.variant,
            "label": self.label,
            "method": self.method_label,
        }


@dataclass
class Cell:
    """One accuracy cell: ``status`` is ``ok`` (``run``/``eval`` set), ``cross-shot`` (``run``/
    ``eval`` set, but the run was trained at ``trained_shots``, not at this cell's shot count),
    ``missing`` or ``conflict`` (``candidates`` lists the runs that all qualify)."""

    split: str
    ways: int
    shots: int
    status: str = CELL_MISSING
    run: RunRecord | None = None
    eval: EvalResult | None = None
    candidates: list[RunRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def mean(self) -> float | None:
        return self.eval.mean if self.eval else None

    @property
    def ci95(self) -> float | None:
        return self.eval.ci95 if self.eval else None

    @property
    def episodes(self) -> int | None:
        return self.eval.episodes if self.eval else None

    @property
    def trained_shots(self) -> int | None:
        return self.run.identity.shots if self.run else None

    @property
    def is_cross_shot(self) -> bool:
        return self.status == CELL_CROSS

    # Time and memory describe a training. A cross-shot cell's run trained at another shot count,
    # so its numbers would pass for a k-shot training's: they are left out of this column.
    @property
    def seconds_per_meta_step(self) -> float | None:
        return self.run.seconds_per_meta_step if self.run and not self.is_cross_shot else None

    @property
    def peak_memory_mb(self) -> float | None:
        return self.run.peak_memory_mb if self.run and not self.is_cross_shot else None

    def to_dict(self) -> dict[str, Any]:
        e = self.eval
        return {
            "split": self.split,
            "ways": self.ways,
            "shots": self.shots,
            "status": self.status,
            "run": self.run.name if self.run else None,
            "run_path": self.run.path if self.run else None,
            "trained_shots": self.trained_shots,
            "eval_file": e.file if e else None,
            "mean_accuracy": e.mean if e else None,
            "ci95": e.ci95 if e else None,
            "episodes": e.episodes if e else None,
            "episode_set": e.episode_set if e else None,
            "stored_mean_accuracy": e.stored_mean if e else None,
            "stored_ci95": e.stored_ci95 if e else None,
            "seconds_per_meta_step": self.seconds_per_meta_step,
            "peak_memory_mb": self.peak_memory_mb,
            "candidates": [c.name for c in self.candidates],
            "notes": list(self.notes),
        }


@dataclass
class Row:
    key: RowKey
    cells: dict[int, Cell]
    total_parameters: int | None = None
    adapted_parameters: int | None = None
    notes: list[str] = field(default_factory=list)

    def cell(self, shots: int) -> Cell:
        return self.cells[shots]

    @property
    def runs(self) -> list[RunRecord]:
        return [c.run for c in self.cells.values() if c.run is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.key.to_dict(),
            "total_parameters": self.total_parameters,
            "adapted_parameters": self.adapted_parameters,
            "cells": {str(k): c.to_dict() for k, c in sorted(self.cells.items())},
            "notes": list(self.notes),
        }


@dataclass
class CrossShot:
    """An evaluation at ``shots`` of a run meta-trained at ``trained_shots`` (another count);
    ``in_table`` when it is shown in its row's ``shots`` cell (no run trained at ``shots``)."""

    key: RowKey
    run: RunRecord
    eval: EvalResult
    trained_shots: int
    in_table: bool = False

    @property
    def shots(self) -> int:
        return self.eval.shots

    def to_dict(self) -> dict[str, Any]:
        e = self.eval
        return {
            **self.key.to_dict(),
            "run": self.run.name,
            "run_path": self.run.path,
            "trained_shots": self.trained_shots,
            "split": e.split,
            "ways": e.ways,
            "shots": e.shots,
            "eval_file": e.file,
            "mean_accuracy": e.mean,
            "ci95": e.ci95,
            "episodes": e.episodes,
            "episode_set": e.episode_set,
            "in_table": self.in_table,
        }


@dataclass
class ResultsTable:
    split: str
    ways: int
    shots: tuple[int, ...]
    rows: list[Row]
    records: list[RunRecord]
    problems: list[str] = field(default_factory=list)
    unused: list[tuple[RunRecord, str]] = field(default_factory=list)
    include_unfinished: bool = False
    cross_shot: list[CrossShot] = field(default_factory=list)

    @property
    def datasets(self) -> list[str | None]:
        out: list[str | None] = []
        for r in self.rows:
            if r.key.dataset not in out:
                out.append(r.key.dataset)
        return out

    def find(self, backbone: str, conv: str, adapt: str, **fields: Any) -> Row:
        """The unique row with these fields (any other :class:`RowKey` field may be given as a
        keyword too); raises ``KeyError`` when there is none or more than one."""
        want = {"backbone": backbone, "conv": conv, "adapt": adapt, **fields}
        hits = [r for r in self.rows if all(getattr(r.key, k) == v for k, v in want.items())]
        if len(hits) != 1:
            raise KeyError(f"{len(hits)} rows match {want}")
        return hits[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "ways": self.ways,
            "shots": list(self.shots),
            "include_unfinished": self.include_unfinished,
            "rows": [r.to_dict() for r in self.rows],
            "problems": list(self.problems),
            "unused_runs": [{"run": r.name, "reason": why} for r, why in self.unused],
            "cross_shot": [c.to_dict() for c in self.cross_shot],
        }


def eligible(run: RunRecord, include_unfinished: bool = False) -> bool:
    """Whether a run may fill table cells."""
    if run.status == STATUS_OK:
        return True
    return (
        include_unfinished
        and run.status == STATUS_UNFINISHED
        and bool(run.evals)
        and all(getattr(run.identity, f) is not None for f in ("backbone", "conv", "adapt"))
    )


#: Training settings (``config.yaml`` keys) in which runs of one row may differ as an ablation;
#: a mapping value (``inner_lr: {atoms: .., default: ..}``) counts per entry. Not here: the seed
#: (repeats of one setting are a conflict, not rows) and bookkeeping (device, threads, paths, logging).
VARIANT_SETTINGS = VARIANT_KEYS  # declared variant=True on their fields (fewshot_acdc.config.setting)


# A setting a run's config.yaml lacks (written before it existed) had today's default.
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _settings(run: RunRecord) -> dict[str, str]:
    """``run``'s :data:`VARIANT_SETTINGS`, flattened (``inner_lr.atoms``), as display strings."""
    config = run.config or {}
    out: dict[str, str] = {}
    for name in VARIANT_SETTINGS:
        value = config.get(name, _DEFAULTS[name])
        if name == "inner_lr":
            try:  # one number is every role's rate: the per-role form's default
                value = check_role_learning_rates(value)
            except (TypeError, ValueError):
                pass  # shown as written
        if isinstance(value, dict):
            out.update({f"{name}.{k}": _shown(v) for k, v in sorted(value.items())})
        else:
            out[name] = _shown(value)
    return out


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def variant_labels(runs: Sequence[RunRecord]) -> list[str]:
    """For runs of one row and training shot count: each run's settings that differ from the
    group's most common value (``""``: it has the common value of every setting). A setting with
    no single most common value labels every run with its own value."""
    if len(runs) < 2:
        return [""] * len(runs)
    settings = [_settings(run) for run in runs]
    names = sorted({name for s in settings for name in s})
    labels: list[list[str]] = [[] for _ in runs]
    for name in names:
        values = [s.get(name, "none") for s in settings]
        if len(set(values)) == 1:
            continue
        counts = {v: values.count(v) for v in values}
        ranked = sorted(counts.values(), reverse=True)
        common = max(counts, key=counts.get) if ranked[0] > ranked[1] else None
        for label, value in zip(labels, values):
            if value != common:
                label.append(f"{name}={value}")
    return [", ".join(label) for label in labels]


def _in_columns(run: RunRecord, split: str, ways: int, shots: Sequence[int]) -> bool:
    return any((s, w) == (split, ways) and k in shots for s, w, k in run.evals)


def _row_keys(runs: Sequence[RunRecord], split: str, ways: int, shots: Sequence[int]) -> dict[int, RowKey]:
    """``id(run) -> RowKey`` with each run's variant among the runs that share its row and training
    shot count and have an evaluation in the table's columns."""
    groups: dict[tuple, list[RunRecord]] = {}
    for run in runs:
        if _in_columns(run, split, ways, shots):
            groups.setdefault((RowKey.from_run(run), run.identity.shots), []).append(run)
    keys = {id(run): RowKey.from_run(run) for run in runs}
    for (plain, _), members in groups.items():
        for run, label in zip(members, variant_labels(members)):
            keys[id(run)] = dataclasses.replace(plain, variant=label)
    return keys


def build_table(
    records: Sequence[RunRecord],
    *,
    ways: int = 5,
    shots: Sequence[int] = (1, 5),
    split: str = "test",
    include_unfinished: bool = False,
) -> ResultsTable:
    """Arrange runs into the comparison table (see the module docstring for the rules)."""
    shots = tuple(int(s) for s in shots)
    candidates: dict[RowKey, dict[int, list[RunRecord]]] = {}
    cross_shot: list[CrossShot] = []
    unused: list[tuple[RunRecord, str]] = []
    runs = [run for run in records if eligible(run, include_unfinished)]
    row_keys = _row_keys(runs, split, ways, shots)
    for run in runs:
        key = row_keys[id(run)]
        for (e_split, e_ways, k), result in sorted(run.evals.items()):
            if (e_split, e_ways) != (split, ways):
                continue
            if run.identity.shots is not None and run.identity.shots != k:
                # cross-shot: listed whatever k is, shown in a cell only if k is a column
                cross_shot.append(CrossShot(key, run, result, run.identity.shots))
            elif k in shots:
                candidates.setdefault(key, {}).setdefault(k, []).append(run)
        if _in_columns(run, split, ways, shots):
            candidates.setdefault(key, {})  # a row even when only cross-shot evaluations fill it
        else:
            have = ", ".join(f"{s} {w}-way {k}-shot" for s, w, k in sorted(run.evals)) or "none"
            unused.append(
                (
                    run,
                    (f"trained {run.identity.shots}-shot" if run.identity.shots is not None
                     else "training shot count unknown")
                    + f"; evaluations ({have}) match no column "
                    f"({split} {ways}-way {'/'.join(map(str, shots))}-shot)",
                )
            )

    problems: list[str] = []
    rows: list[Row] = []
    for key in sorted(candidates, key=RowKey.sort_key):
        cells: dict[int, Cell] = {}
        for k in shots:
            cell = Cell(split=split, ways=ways, shots=k)
            runs = candidates[key].get(k, [])
            if len(runs) == 1:
                run = runs[0]
                cell.status = CELL_OK
                cell.run = run
                cell.eval = run.get_eval(split, ways, k)
                cell.notes.extend(f"{run.name}: {w}" for w in cell.eval.warnings)
                if run.status != STATUS_OK:
                    cell.notes.append(f"{run.name}: from an unfinished run (no summary.json)")
                if run.identity.shots is None:
                    cell.notes.append(
                        f"{run.name}: training shot count unknown; assumed {k}-shot from its "
                        "evaluation"
                    )
                if run.identity.ways is not None and run.identity.ways != ways:
                    cell.notes.append(f"{run.name}: trained {run.identity.ways}-way")
            elif len(runs) > 1:
                cell.status = CELL_CONFLICT
                cell.candidates = list(runs)
                evals = [(r, r.get_eval(split, ways, k)) for r in runs]
                listed = "; ".join(
                    f"{r.name}: {100 * e.mean:.2f} ± {100 * e.ci95:.2f} ({e.episodes})"
                    for r, e in evals
                )
                cell.notes.append(
                    f"{len(runs)} runs qualify ({', '.join(r.name for r in runs)}); none is "
                    "shown - see Problems"
                )
                where = f"{key.dataset}: {key.label}" if key.dataset else key.label
                problems.append(
                    f"conflict: {len(runs)} runs qualify for {where}, {split} {ways}-way "
                    f"{k}-shot, so none is shown ({listed}). Pass only one of them."
                )
            else:
                _fill_cross_shot(cell, [c for c in cross_shot if c.key == key and c.shots == k])
            cells[k] = cell
        row = Row(key=key, cells=cells)
        _fill_parameters(row)
        rows.append(row)
    return ResultsTable(
        split=split,
        ways=ways,
        shots=shots,
        rows=rows,
        records=list(records),
        problems=problems,
        unused=unused,
        include_unfinished=include_unfinished,
        cross_shot=sorted(cross_shot, key=lambda c: (c.key.sort_key(), c.shots, c.trained_shots, c.run.name)),
    )


def _fill_cross_shot(cell: Cell, evaluations: list[CrossShot]) -> None:
    """Show the one cross-shot evaluation of an otherwise empty cell, marked as such. Several
    (e.g. runs trained 1-shot and 10-shot, both evaluated 5-shot) are different protocols with
    no reason to prefer one: the cell stays empty and points at the list."""
    if len(evaluations) == 1:
        [c] = evaluations
        cell.status, cell.run, cell.eval = CELL_CROSS, c.run, c.eval
        c.in_table = True
        cell.notes.append(
            f"{c.run.name}: trained {c.trained_shots}-shot, evaluated {cell.shots}-shot "
            f"(cross-shot); no run of this row was trained {cell.shots}-shot"
        )
        cell.notes.extend(f"{c.run.name}: {w}" for w in c.eval.warnings)
        if c.run.status != STATUS_OK:
            cell.notes.append(f"{c.run.name}: from an unfinished run (no summary.json)")
    elif evaluations:
        cell.notes.append(
            f"{len(evaluations)} cross-shot evaluations at {cell.shots} shots ("
            + ", ".join(f"{c.run.name}, trained {c.trained_shots}-shot" for c in evaluations)
            + "), none trained at it; see Cross-shot evaluations"
        )


def _fill_parameters(row: Row) -> None:
    for attr in ("total_parameters", "adapted_parameters"):
        values = {
            k: getattr(c.run, attr)
            for k, c in sorted(row.cells.items())
            if c.run is not None and getattr(c.run, attr) is not None
        }
        distinct = set(values.values())
        if len(distinct) == 1:
            setattr(row, attr, distinct.pop())
        elif len(distinct) > 1:
            detail = ", ".join(f"{k}-shot run: {v}" for k, v in values.items())
            row.notes.append(f"{attr} differ between the runs of this row ({detail})")
