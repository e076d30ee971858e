"""Accuracy against backbone depth (ResNet10/18/34), in the style of Figure 7 of the ACDC paper:
one panel per shot count (one row of panels per dataset), one line per method (MAML, MAML +
ACDC-net, ...) with 95% CI error bars, plus published reference numbers as a separate dashed,
grey, open-marker series labelled ``published (Chen et al. 2019)``.

A table cell filled by a cross-shot evaluation (trained 1-shot, evaluated 5-shot) is plotted in
its panel as its own series, labelled ``... (trained 1-shot)``, in its method's colour with a
dotted line and open markers. Every panel's y axis is accuracy in percent: a panel with nothing
to plot takes the range of the others (0-100 when nothing is plotted at all) instead of
matplotlib's default 0-1, which would read as a different unit.

Only pyplot-free matplotlib objects are used (``matplotlib.figure.Figure``), so this works
headless whatever backend the user has configured and never opens a window.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from .published import PublishedSource
from .table import CELL_CROSS, CELL_OK, ResultsTable, backbone_depth, backbone_label

#: Backbone family plotted on the depth axis.
DEPTH_FAMILY = "resnet"

PUBLISHED_STYLE = dict(
    color="0.45", linestyle="--", marker="s", markerfacecolor="white", markersize=6, linewidth=1.2
)


@dataclass
class Point:
    backbone: str
    depth: int
    accuracy: float  # percent
    ci95: float  # percent
    episodes: int | None = None
    run: str | None = None


@dataclass
class Series:
    label: str
    dataset: str | None
    shots: int
    published: bool
    points: list[Point] = field(default_factory=list)
    trained_shots: int | None = None  # set for cross-shot series: the runs trained at this count
    method: str | None = None  # the label without the cross-shot suffix (one colour per method)

    @property
    def cross_shot(self) -> bool:
        return self.trained_shots is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "dataset": self.dataset,
            "shots": self.shots,
            "published": self.published,
            "trained_shots": self.trained_shots,
            "points": [p.__dict__.copy() for p in self.points],
        }


def _in_family(backbone: str | None) -> bool:
    return bool(backbone) and re.sub(r"\d+$", "", backbone) == DEPTH_FAMILY and backbone_depth(
        backbone
    ) is not None


def figure_series(
    table: ResultsTable, published: Sequence[PublishedSource] = ()
) -> list[Series]:
    """The numbers the figure plots (ours first, then published), in percent."""
    ours: dict[tuple, Series] = {}
    adapts = {r.key.adapt for r in table.rows if _in_family(r.key.backbone)}
    for row in table.rows:
        if not _in_family(row.key.backbone):
            continue
        label = row.key.method_label
        if len(adapts) > 1 or (adapts and adapts != {"all"}):
            label += f", adapt {row.key.adapt}"
        if row.key.variant:
            label += f" ({row.key.variant})"
        for k in table.shots:
            cell = row.cells[k]
            if cell.status not in (CELL_OK, CELL_CROSS):
                continue
            trained = cell.trained_shots if cell.status == CELL_CROSS else None
            shown = label if trained is None else f"{label} (trained {trained}-shot)"
            s = ours.setdefault(
                (row.key.dataset, k, shown),
                Series(label=shown, dataset=row.key.dataset, shots=k, published=False,
                       trained_shots=trained, method=label),
            )
            s.points.append(
                Point(
                    backbone=row.key.backbone,
                    depth=row.key.depth,
                    accuracy=100.0 * cell.eval.mean,
                    ci95=100.0 * cell.eval.ci95,
                    episodes=cell.eval.episodes,
                    run=cell.run.name,
                )
            )
    series = list(ours.values())
    datasets = table.datasets
    for src in published:
        pub: dict[tuple, Series] = {}
        for r in src.results:
            if r.ways != table.ways or r.shots not in table.shots or not _in_family(r.backbone):
                continue
            if r.dataset not in datasets:
                continue  # only beside our runs on the same dataset
            s = pub.setdefault(
                (r.dataset, r.shots, r.method),
                Series(
                    label=f"{r.method}, {src.label}", dataset=r.dataset, shots=r.shots,
                    published=True,
                ),
            )
            s.points.append(
                Point(backbone=r.backbone, depth=backbone_depth(r.backbone), accuracy=r.accuracy,
                      ci95=r.ci95)
            )
        series.extend(pub.values())
    for s in series:
        s.points.sort(key=lambda p: p.depth)
    return series


def plot_accuracy_vs_depth(
    table: ResultsTable,
    png_path: str | os.PathLike | None,
    svg_path: str | os.PathLike | None = None,
    published: Sequence[PublishedSource] = (),
) -> list[Series]:
    """Draw the figure and save it as PNG and/or SVG; returns the plotted series."""
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": "fewshot-acdc", "svg.fonttype": "path"}):
        fig, series = draw_accuracy_vs_depth(table, published)
        if png_path is not None:
            fig.savefig(png_path, format="png", dpi=150, bbox_inches="tight")
        if svg_path is not None:
            fig.savefig(svg_path, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return series


def draw_accuracy_vs_depth(
    table: ResultsTable, published: Sequence[PublishedSource] = ()
) -> tuple[Any, list[Series]]:
    """The figure (a ``matplotlib.figure.Figure``, axes row-major: dataset x shot count) and
    the series it plots, unsaved."""
    import matplotlib
    from matplotlib.figure import Figure

    series = figure_series(table, published)
    datasets = table.datasets or [None]
    datasets = [d for d in datasets if any(s.dataset == d for s in series)] or datasets[:1]
    depths = sorted({p.depth for s in series for p in s.points})
    xpos = {d: i for i, d in enumerate(depths)}

    ours_labels = [s.label for s in series if not s.published]
    methods: list[str] = []
    for s in series:
        if not s.published and s.method not in methods:
            methods.append(s.method)
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    colors = {method: cycle[i % len(cycle)] for i, method in enumerate(methods)}
    markers = ["o", "^", "D", "v", "P", "X", "*"]
    # One y range in percent for panels with nothing to plot (see the module docstring).
    ys = [y for s in series for p in s.points for y in (p.accuracy - p.ci95, p.accuracy + p.ci95)]
    if ys:
        pad = max(2.0, 0.05 * (max(ys) - min(ys)))
        empty_ylim = (max(0.0, min(ys) - pad), min(100.0, max(ys) + pad))
    else:
        empty_ylim = (0.0, 100.0)

    nrows, ncols = len(datasets), len(table.shots)
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True)
    handles: dict[str, Any] = {}
    for i, dataset in enumerate(datasets):
        for j, k in enumerate(table.shots):
            ax = axes[i][j]
            panel = [s for s in series if s.dataset == dataset and s.shots == k]
            title = f"{table.ways}-way {k}-shot"
            if len(datasets) > 1 or dataset:
                title = f"{dataset or 'unknown dataset'}: {title}"
            ax.set_title(title)
            m = len(panel)
            for n, s in enumerate(panel):
                offset = (n - (m - 1) / 2) * 0.06
                x = [xpos[p.depth] + offset for p in s.points]
                y = [p.accuracy for p in s.points]
                err = [p.ci95 for p in s.points]
                if s.published:
                    style = dict(PUBLISHED_STYLE)
                else:
                    idx = methods.index(s.method)
                    style = dict(
                        color=colors[s.method], linestyle="-",
                        marker=markers[idx % len(markers)], markersize=6, linewidth=1.6,
                    )
                    if s.cross_shot:  # the same method, another protocol: same colour, open
                        style.update(linestyle=":", markerfacecolor="white")
                h = ax.errorbar(x, y, yerr=err, capsize=3, label=s.label, **style)
                handles.setdefault(s.label, h)
            if not panel:
                ax.text(0.5, 0.5, "no results", ha="center", va="center",
                        transform=ax.transAxes, color="0.4")
                ax.set_ylim(*empty_ylim)
            ax.set_xticks(range(len(depths)))
            ax.set_xticklabels([backbone_label(f"{DEPTH_FAMILY}{d}") for d in depths])
            if depths:
                ax.set_xlim(-0.5, len(depths) - 0.5)
            ax.set_xlabel("backbone")
            ax.set_ylabel("accuracy (%) ± 95% CI")
            ax.grid(True, axis="y", alpha=0.3)
    if handles:
        ordered = [h for h in handles if h in ours_labels] + [
            h for h in handles if h not in ours_labels
        ]
        longest = max(len(h) for h in ordered)
        ncol = max(1, min(len(ordered), int(12 * ncols // max(longest, 1)) or 1))
        fig.legend(
            [handles[h] for h in ordered], ordered, loc="outside lower center",
            ncol=ncol, frameon=False, fontsize="small",
        )
    return fig, series
