"""Putting it together: collect runs, build the table and comparisons, write every output."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .compare import DEFAULT_ALPHA, PairedComparison, apply_holm, default_comparisons, paired_comparison
from .figure import Series, plot_accuracy_vs_depth
from .published import PUBLISHED, PublishedSource
from .render import (
    render_comparisons_csv,
    render_comparisons_markdown,
    render_latex,
    render_markdown,
    render_published_csv,
    render_results_csv,
)
from .runs import RunRecord, collect_runs
from .stats import WILCOXON_DESCRIPTION, Z95
from .table import ResultsTable, build_table

SCHEMA_VERSION = 1
FIGURE_STEM = "accuracy_vs_depth"


@dataclass
class ReportPaths:
    """Files written by :func:`write_report` (``published_csv`` is None without published)."""

    markdown: Path
    csv: Path
    latex: Path
    comparisons_markdown: Path
    comparisons_csv: Path
    json: Path
    figure_png: Path
    figure_svg: Path
    published_csv: Path | None = None

    def all(self) -> list[Path]:
        return [p for p in self.__dict__.values() if p is not None]


@dataclass
class Report:
    """Everything a report shows, before it is written anywhere."""

    records: list[RunRecord]
    table: ResultsTable
    comparisons: list[PairedComparison]
    published: tuple[PublishedSource, ...] = ()
    alpha: float = DEFAULT_ALPHA
    figure: list[Series] = field(default_factory=list)

    @property
    def problem_runs(self) -> list[RunRecord]:
        return [r for r in self.records if r.problems]

    def to_dict(self, include_episodes: bool = True) -> dict[str, Any]:
        return _json_safe(
            {
                "schema_version": SCHEMA_VERSION,
                "generated_by": "fewshot_acdc.results",
                "units": "accuracies and CIs are fractions in [0, 1] (published and figure points: percent)",
                "settings": {
                    "split": self.table.split,
                    "ways": self.table.ways,
                    "shots": list(self.table.shots),
                    "include_unfinished": self.table.include_unfinished,
                    "ci": f"{Z95} * std(ddof=0) / sqrt(n)",
                    "test": WILCOXON_DESCRIPTION,
                    "multiple_comparisons": "Holm over all paired comparisons",
                    "alpha": self.alpha,
                },
                "table": self.table.to_dict(),
                "comparisons": [c.to_dict(self.alpha) for c in self.comparisons],
                "published": [s.to_dict() for s in self.published],
                "figure": [s.to_dict() for s in self.figure],
                "runs": [r.to_dict(include_episodes) for r in self.records],
                "problems": {
                    "table": list(self.table.problems),
                    "runs": [
                        {"run": r.name, "path": r.path, "status": r.status, "reasons": r.problems}
                        for r in self.records
                        if r.problems
                    ],
                    "unused_runs": [{"run": r.name, "reason": why} for r, why in self.table.unused],
                },
            }
        )


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _published(published: bool | Sequence[PublishedSource]) -> tuple[PublishedSource, ...]:
    if published is True:
        return PUBLISHED
    if not published:
        return ()
    return tuple(published)


def build_report(
    runs: Iterable[str | os.PathLike] | Sequence[RunRecord],
    *,
    ways: int = 5,
    shots: Sequence[int] = (1, 5),
    split: str = "test",
    include_unfinished: bool = False,
    published: bool | Sequence[PublishedSource] = True,
    compare: Sequence[tuple[str | os.PathLike | RunRecord, str | os.PathLike | RunRecord]] = (),
    alpha: float = DEFAULT_ALPHA,
) -> Report:
    """Collect (or take) run records, build the table and all comparisons.

    ``compare`` adds explicit pairs (A, B) compared at every column protocol; they join the
    default comparisons in one Holm family.
    """
    if isinstance(runs, (str, os.PathLike, RunRecord)):
        runs = [runs]
    runs = list(runs)
    if runs and all(isinstance(r, RunRecord) for r in runs):
        records = list(runs)
    else:
        records = collect_runs(runs)
    table = build_table(
        records, ways=ways, shots=shots, split=split, include_unfinished=include_unfinished
    )
    comparisons = default_comparisons(table)
    explicit = []
    for a, b in compare:
        for k in table.shots:
            explicit.append(paired_comparison(a, b, ways=ways, shots=k, split=split))
    if explicit:
        comparisons = apply_holm(comparisons + explicit)
    return Report(
        records=records,
        table=table,
        comparisons=comparisons,
        published=_published(published),
        alpha=alpha,
    )


def write_report(
    paths: Iterable[str | os.PathLike] | Sequence[RunRecord],
    out_dir: str | os.PathLike,
    published: bool | Sequence[PublishedSource] = True,
    *,
    ways: int = 5,
    shots: Sequence[int] = (1, 5),
    split: str = "test",
    include_unfinished: bool = False,
    compare: Sequence[tuple[Any, Any]] = (),
    alpha: float = DEFAULT_ALPHA,
    include_episodes: bool = True,
) -> ReportPaths:
    """Collect the runs at/below ``paths`` and write the full report into ``out_dir``:

    ``results.md``, ``results.csv``, ``results.tex``, ``comparisons.md``, ``comparisons.csv``,
    ``results.json``, ``accuracy_vs_depth.png`` / ``.svg`` and (with published numbers)
    ``published.csv``. Problems with individual runs never stop the report.
    """
    report = build_report(
        paths,
        ways=ways,
        shots=shots,
        split=split,
        include_unfinished=include_unfinished,
        published=published,
        compare=compare,
        alpha=alpha,
    )
    return save_report(report, out_dir, include_episodes=include_episodes)


def save_report(report: Report, out_dir: str | os.PathLike, include_episodes: bool = True) -> ReportPaths:
    """Write an already built :class:`Report` (see :func:`write_report` for the files)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(
        markdown=out / "results.md",
        csv=out / "results.csv",
        latex=out / "results.tex",
        comparisons_markdown=out / "comparisons.md",
        comparisons_csv=out / "comparisons.csv",
        json=out / "results.json",
        figure_png=out / f"{FIGURE_STEM}.png",
        figure_svg=out / f"{FIGURE_STEM}.svg",
        published_csv=(out / "published.csv") if report.published else None,
    )
    report.figure = plot_accuracy_vs_depth(
        report.table, paths.figure_png, paths.figure_svg, published=report.published
    )
    _write(paths.markdown, render_markdown(
        report.table, report.comparisons, report.published, paths.figure_png.name, report.alpha
    ))
    _write(paths.csv, render_results_csv(report.table))
    _write(paths.latex, render_latex(report.table, report.published))
    _write(paths.comparisons_markdown, render_comparisons_markdown(report.comparisons, report.alpha))
    _write(paths.comparisons_csv, render_comparisons_csv(report.comparisons, report.alpha))
    if paths.published_csv is not None:
        _write(paths.published_csv, render_published_csv(report.published))
    elif (out / "published.csv").exists():
        (out / "published.csv").unlink()  # a stale file from an earlier run would mislead
    _write(
        paths.json,
        json.dumps(report.to_dict(include_episodes), indent=2, ensure_ascii=False, allow_nan=False)
        + "\n",
    )
    return paths


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
