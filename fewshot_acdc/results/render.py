"""Text renderings of the results: Markdown, CSV, LaTeX and the JSON dump.

Units: Markdown / LaTeX / CSV show accuracies in percent (CSV column names end in ``_pct``);
``results.json`` keeps fractions in [0, 1] like the evaluation files. Published numbers are
rendered only in their own sections / files.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Sequence

from .compare import DEFAULT_ALPHA, PairedComparison
from .published import PublishedSource
from .runs import RunRecord
from .stats import WILCOXON_DESCRIPTION
from .table import CELL_CONFLICT, CELL_CROSS, CELL_OK, ResultsTable, Row, backbone_label, conv_label

DASH = "—"

# ---------------------------------------------------------------------------------------------
# number formats


def fmt_pct(x: float | None, digits: int = 2) -> str:
    return DASH if x is None else f"{100.0 * x:.{digits}f}"


def fmt_acc(mean: float | None, ci95: float | None, n: int | None = None) -> str:
    """``48.43 ± 1.79 (600)`` from fractions (``n`` omitted when None)."""
    if mean is None:
        return DASH
    text = f"{100.0 * mean:.2f} ± {100.0 * ci95:.2f}"
    return text if n is None else f"{text} ({n})"


def fmt_params(n: int | None) -> str:
    """``2356741`` -> ``2.36M``; ``113200`` -> ``113.2K``; small counts unchanged."""
    if n is None:
        return DASH
    if n >= 999_500:  # so that rounding never prints "1000.0K"
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}K"
    return str(n)


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return DASH
    return f"{s:.0f}" if s >= 100 else f"{s:#.3g}".rstrip(".")


def fmt_mb(mb: float | None) -> str:
    return DASH if mb is None else f"{mb:.0f}"


def fmt_p(p: float | None) -> str:
    if p is None:
        return DASH
    if p < 1e-4:
        return f"{p:.1e}"
    return f"{p:.4f}"


def fmt_diff(diff: float | None, ci: float | None) -> str:
    """Percentage-point difference with sign: ``+1.23 ± 0.45``."""
    if diff is None:
        return DASH
    return f"{100.0 * diff:+.2f} ± {100.0 * ci:.2f}"


def _csv_float(x: float | None, scale: float = 1.0, digits: int | None = None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    v = x * scale
    return f"{v:.{digits}f}" if digits is not None else repr(float(v))


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        lines.append("| " + " | ".join(_md_escape(c) for c in r) + " |")
    return lines


def _per_shot(values: Sequence[str]) -> str:
    return " / ".join(values)


def trained_label(shots: int | None) -> str:
    """What a cross-shot cell says next to its number: the protocol differs from the column's."""
    return f"trained {shots}-shot" if shots is not None else "trained at another shot count"


def _adapt_text(row: Row) -> str:
    return ((row.key.adapt or "?") + (", first-order" if row.key.first_order else "")
            + (", shared head" if row.key.head_init == "shared" else "")
            + (f" ({row.key.variant})" if row.key.variant else ""))


# ---------------------------------------------------------------------------------------------
# Markdown


class _Notes:
    """Numbered footnotes shared by one document."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def mark(self, notes: Sequence[str]) -> str:
        marks = []
        for n in notes:
            if n not in self.items:
                self.items.append(n)
            marks.append(f"[{self.items.index(n) + 1}]")
        return (" " + "".join(marks)) if marks else ""


def results_table_markdown(table: ResultsTable, notes: _Notes) -> list[str]:
    lines: list[str] = []
    shot_cols = [f"{table.ways}-way {k}-shot" for k in table.shots]
    shot_names = " / ".join(f"{k}-shot" for k in table.shots)
    header = (
        ["Backbone", "Conv", "Adapt"]
        + shot_cols
        + [
            "Params",
            "Adapted / task",
            f"s / meta-step ({shot_names})",
            f"Peak memory MB ({shot_names})",
        ]
    )
    datasets = table.datasets
    if not table.rows:
        return ["No finished run has a usable evaluation yet (see Runs and Problems below)."]
    for dataset in datasets:
        if len(datasets) > 1 or dataset:
            lines += [f"### Dataset: {dataset or 'unknown'}", ""]
        body = []
        for row in (r for r in table.rows if r.key.dataset == dataset):
            cells = []
            for k in table.shots:
                c = row.cells[k]
                if c.status == CELL_OK:
                    text = fmt_acc(c.mean, c.ci95, c.episodes)
                elif c.status == CELL_CROSS:
                    text = f"{fmt_acc(c.mean, c.ci95, c.episodes)}, {trained_label(c.trained_shots)}"
                elif c.status == CELL_CONFLICT:
                    text = f"conflict: {len(c.candidates)} runs"
                else:
                    text = DASH
                cells.append(text + notes.mark(c.notes))
            param_notes = [n for n in row.notes if "total_parameters" in n]
            adapted_notes = [n for n in row.notes if "adapted_parameters" in n]
            body.append(
                [row.key.backbone_label, row.key.conv_label, _adapt_text(row)]
                + cells
                + [
                    fmt_params(row.total_parameters) + notes.mark(param_notes),
                    fmt_params(row.adapted_parameters) + notes.mark(adapted_notes),
                    _per_shot([fmt_seconds(row.cells[k].seconds_per_meta_step) for k in table.shots]),
                    _per_shot([fmt_mb(row.cells[k].peak_memory_mb) for k in table.shots]),
                ]
            )
        lines += _md_table(header, body) + [""]
    return lines


def cross_shot_markdown(table: ResultsTable) -> list[str]:
    """Every evaluation at another shot count than the run was trained with, as such."""
    if not table.cross_shot:
        return []
    show_dataset = len({c.key.dataset for c in table.cross_shot}) > 1
    header = (["Dataset"] if show_dataset else []) + [
        "Run", "Backbone", "Conv", "Adapt", "Trained", "Evaluated", "Accuracy (%)", "In the table",
    ]
    body = []
    for c in table.cross_shot:
        in_table = (f"yes: {table.ways}-way {c.shots}-shot column" if c.in_table
                    else "no" + (f" ({c.shots}-shot is not a column)" if c.shots not in table.shots
                                 else f" (the {c.shots}-shot cell has its own run or several of these)"))
        body.append(([c.key.dataset or DASH] if show_dataset else []) + [
            f"`{c.run.name}`", c.key.backbone_label, c.key.conv_label,
            (c.key.adapt or "?") + (f" ({c.key.variant})" if c.key.variant else ""),
            f"{c.trained_shots}-shot", f"{table.ways}-way {c.shots}-shot",
            fmt_acc(c.eval.mean, c.eval.ci95, c.eval.episodes), in_table,
        ])
    return [
        "## Cross-shot evaluations",
        "",
        "Runs meta-trained at one shot count and evaluated at another (e.g. "
        "`evaluate.py --shots 1 5` on a 1-shot run). That is a different protocol from a run "
        "trained at the evaluated shot count, so these are shown as such, fill a table cell "
        "only where no run of the row was trained at that count (labelled there), and are "
        "never paired in comparisons.",
        "",
    ] + _md_table(header, body) + [""]


def comparisons_markdown_table(
    comparisons: Sequence[PairedComparison], alpha: float = DEFAULT_ALPHA
) -> list[str]:
    paired = [c for c in comparisons if c.paired]
    unpaired = [c for c in comparisons if not c.paired]
    lines: list[str] = []
    if not comparisons:
        return ["No pair of table rows could be compared (each comparison needs both cells)."]
    show_dataset = len({c.dataset for c in comparisons}) > 1
    if paired:
        header = (["Dataset"] if show_dataset else []) + [
            "Kind", "A", "B", "Protocol", "Episodes", "A acc (%)", "B acc (%)",
            "Δ = A − B (pp) ± 95% CI", "95% CI of Δ (pp)", "Wilcoxon T", "p", "p (Holm)",
            "Verdict",
        ]
        body = []
        for c in paired:
            body.append(
                ([c.dataset or DASH] if show_dataset else []) + [
                    c.kind, c.label_a, c.label_b, c.protocol, str(c.n),
                    fmt_acc(c.mean_a, c.ci95_a), fmt_acc(c.mean_b, c.ci95_b),
                    fmt_diff(c.diff, c.ci95),
                    f"[{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}]",
                    f"{c.statistic:g}" if c.statistic is not None else DASH,
                    fmt_p(c.p_value), fmt_p(c.p_holm),
                    c.verdict(alpha) + (f" ({c.note})" if c.note else ""),
                ]
            )
        lines += _md_table(header, body) + [""]
    if unpaired:
        lines += ["Not paired (no episode-by-episode comparison possible):", ""]
        for c in unpaired:
            where = f"{c.dataset}, " if show_dataset and c.dataset else ""
            lines.append(
                f"- {c.kind}: {c.label_a} vs {c.label_b}, {where}{c.protocol}: {c.reason}"
            )
        lines.append("")
    return lines


def comparisons_explanation(alpha: float = DEFAULT_ALPHA) -> list[str]:
    return [
        "Each comparison pairs two models episode by episode on the same fixed episodes "
        "(same `episode_set`, same number of episodes). Δ is the mean of the per-episode "
        "accuracy differences A − B in percentage points, with the 95% CI 1.96·std(Δ)/√n. "
        f"The test is the {WILCOXON_DESCRIPTION}. p (Holm) adjusts p over all paired "
        f"comparisons listed; the verdict calls a difference real when p (Holm) < {alpha}. "
        "The 95% CI of Δ is not adjusted for multiple comparisons.",
        "",
    ]


def published_markdown(sources: Sequence[PublishedSource], ways: int, shots: Sequence[int]) -> list[str]:
    lines: list[str] = []
    for src in sources:
        lines += [
            f"Label: **{src.label}**. Source: {src.citation} {src.where}; {src.setting}. "
            "Numbers transcribed from the paper (percent), not produced by this project.",
            "",
        ]
        header = ["Method", "Backbone", "Dataset"] + [f"{ways}-way {k}-shot" for k in shots]
        keys = []
        for r in src.results:
            k = (r.method, r.backbone, r.dataset)
            if k not in keys:
                keys.append(k)
        body = []
        for method, backbone, dataset in keys:
            cells = []
            for k in shots:
                hit = [
                    r for r in src.results
                    if (r.method, r.backbone, r.dataset, r.ways, r.shots)
                    == (method, backbone, dataset, ways, k)
                ]
                cells.append(f"{hit[0].accuracy:.2f} ± {hit[0].ci95:.2f}" if hit else DASH)
            body.append([method, backbone_label(backbone), dataset] + cells)
        lines += _md_table(header, body) + [""]
    return lines


def runs_markdown(records: Sequence[RunRecord]) -> list[str]:
    header = ["Run", "Status", "Dataset", "Backbone", "Conv", "Adapt", "Trained shots",
              "Evaluations"]
    body = []
    for r in records:
        i = r.identity
        evals = ", ".join(
            f"{s} {w}w{k}s" + (" (cross-shot)" if i.shots is not None and k != i.shots else "")
            for s, w, k in sorted(r.evals)
        ) or DASH
        body.append(
            [
                f"`{r.name}`",
                r.status,
                i.dataset or DASH,
                backbone_label(i.backbone) if i.backbone else DASH,
                conv_label(i.conv, i.size, i.group_size) if i.conv else DASH,
                i.adapt or DASH,
                str(i.shots) if i.shots is not None else DASH,
                evals,
            ]
        )
    return _md_table(header, body) + [""]


def problems_markdown(table: ResultsTable, records: Sequence[RunRecord]) -> list[str]:
    lines: list[str] = []
    for p in table.problems:
        lines.append(f"- {p}")
    for r in records:
        if r.problems:
            lines.append(f"- `{r.name}` ({r.status}): " + "; ".join(r.problems))
    for r, why in table.unused:
        lines.append(f"- `{r.name}` (not in the table): {why}")
    warn = [(r, w) for r in records for w in r.warnings]
    if warn:
        lines += ["", "Warnings (oddities that do not by themselves exclude a run):", ""]
        lines += [f"- `{r.name}`: {w}" for r, w in warn]
    return lines or ["None."]


def omniglot_markdown(records: Sequence[RunRecord]) -> list[str]:
    rows = [r for r in records if r.omniglot is not None]
    if not rows:
        return []
    body = []
    for r in rows:
        o = r.omniglot
        if o.per_run_error_rate:
            runs = str(len(o.per_run_error_rate))
        else:
            runs = str(o.runs) if o.runs else DASH
        body.append([f"`{r.name}`", r.status, f"{100 * o.error_rate:.2f}", runs])
    return (
        ["## Omniglot all-runs benchmark (20-way within-alphabet)", "",
         "Error rate in % (mean of per_run_error_rate, else the stored error_rate)."]
        + [""]
        + _md_table(["Run", "Status", "Error rate (%)", "Runs"], body)
        + [""]
    )


def render_markdown(
    table: ResultsTable,
    comparisons: Sequence[PairedComparison],
    published: Sequence[PublishedSource] = (),
    figure_name: str | None = "accuracy_vs_depth.png",
    alpha: float = DEFAULT_ALPHA,
) -> str:
    records = table.records
    n_runs = sum(1 for r in records if r.status != "missing")
    used = {r.path for row in table.rows for r in row.runs}
    notes = _Notes()
    lines = [
        f"# Few-shot results: {table.ways}-way " + " and ".join(f"{k}-shot" for k in table.shots),
        "",
        f"From {n_runs} run director{'y' if n_runs == 1 else 'ies'} ({len(used)} used in the "
        f"table). Accuracy in %: mean ± 95% CI (number of episodes) on the `{table.split}` "
        "split, recomputed from `per_episode_accuracy` (CI = 1.96·std/√n, population std). "
        "The k-shot column of a row comes from the run of that row trained k-shot (a run "
        "trained at another shot count and evaluated k-shot appears there only when no such "
        "run exists, labelled with the shot count it was trained at; see Cross-shot "
        "evaluations); time per meta-step and peak memory are shown per shot count because "
        "those are separate trainings."
        + (" Unfinished runs are included where marked." if table.include_unfinished else ""),
        "",
        "## Our results",
        "",
    ]
    lines += results_table_markdown(table, notes)
    if notes.items:
        lines += ["Notes:", ""] + [f"- [{i + 1}] {n}" for i, n in enumerate(notes.items)] + [""]
    lines += cross_shot_markdown(table)
    lines += ["## Paired comparisons", ""] + comparisons_explanation(alpha)
    lines += comparisons_markdown_table(comparisons, alpha)
    if published:
        lines += ["## Published reference numbers (not our runs)", ""]
        lines += published_markdown(published, table.ways, table.shots)
    if figure_name:
        lines += [
            "## Accuracy against backbone depth",
            "",
            f"![accuracy against backbone depth]({figure_name})",
            "",
            "Solid lines: our runs. "
            + ("Dashed grey open markers: published numbers. " if published else "")
            + "Error bars: 95% CI.",
            "",
        ]
    lines += omniglot_markdown(records)
    lines += ["## Runs", ""] + runs_markdown(records)
    lines += ["## Problems", ""] + problems_markdown(table, records) + [""]
    return "\n".join(lines)


def render_comparisons_markdown(
    comparisons: Sequence[PairedComparison], alpha: float = DEFAULT_ALPHA
) -> str:
    lines = ["# Paired comparisons", ""] + comparisons_explanation(alpha)
    lines += comparisons_markdown_table(comparisons, alpha)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# CSV


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def results_csv_header(table: ResultsTable) -> list[str]:
    header = ["dataset", "backbone", "conv", "size", "group_size", "adapt", "first_order", "head_init", "variant"]
    for k in table.shots:
        p = f"acc_{table.ways}way_{k}shot"
        header += [f"{p}_mean_pct", f"{p}_ci95_pct", f"{p}_episodes", f"{p}_status",
                   f"{p}_run", f"{p}_trained_shots", f"{p}_episode_set"]
    header += ["total_parameters", "adapted_parameters"]
    header += [f"seconds_per_meta_step_{k}shot" for k in table.shots]
    header += [f"peak_memory_mb_{k}shot" for k in table.shots]
    header += ["notes"]
    return header


def render_results_csv(table: ResultsTable) -> str:
    """One line per table row; accuracies in percent (6 decimals), exact integer parameter
    counts, time / memory exactly as in summary.json; empty where unknown."""
    rows = []
    for row in table.rows:
        k_ = row.key
        line: list[Any] = [
            k_.dataset or "", k_.backbone or "", k_.conv or "",
            "" if k_.size is None else k_.size,
            "" if k_.group_size is None else k_.group_size,
            k_.adapt or "", str(k_.first_order).lower(), k_.head_init, k_.variant,
        ]
        all_notes = list(row.notes)
        for k in table.shots:
            c = row.cells[k]
            line += [
                _csv_float(c.mean, 100.0, 6), _csv_float(c.ci95, 100.0, 6),
                "" if c.episodes is None else c.episodes, c.status,
                c.run.name if c.run else ";".join(r.name for r in c.candidates),
                "" if c.trained_shots is None else c.trained_shots,
                c.eval.episode_set or "" if c.eval else "",
            ]
            all_notes += [f"{k}-shot: {n}" for n in c.notes]
        line += [
            "" if row.total_parameters is None else row.total_parameters,
            "" if row.adapted_parameters is None else row.adapted_parameters,
        ]
        line += [_csv_float(row.cells[k].seconds_per_meta_step) for k in table.shots]
        line += [_csv_float(row.cells[k].peak_memory_mb) for k in table.shots]
        line.append(" | ".join(all_notes))
        rows.append(line)
    return _csv_text(results_csv_header(table), rows)


COMPARISON_CSV_HEADER = [
    "kind", "dataset", "label_a", "label_b", "run_a", "run_b", "split", "ways", "shots", "paired",
    "reason", "episode_set", "episodes", "mean_a_pct", "ci95_a_pct", "mean_b_pct",
    "ci95_b_pct", "diff_pct", "diff_ci95_pct", "diff_ci_low_pct", "diff_ci_high_pct",
    "wilcoxon_statistic", "p_value", "p_holm", "episodes_differing", "significant",
    "verdict", "note",
]


def render_comparisons_csv(
    comparisons: Sequence[PairedComparison], alpha: float = DEFAULT_ALPHA
) -> str:
    rows = []
    for c in comparisons:
        sig = c.significant(alpha)
        rows.append(
            [
                c.kind, c.dataset or "", c.label_a, c.label_b, c.run_a or "", c.run_b or "", c.split, c.ways,
                c.shots, str(c.paired).lower(), c.reason or "", c.episode_set or "",
                "" if c.n is None else c.n,
                _csv_float(c.mean_a, 100.0, 6), _csv_float(c.ci95_a, 100.0, 6),
                _csv_float(c.mean_b, 100.0, 6), _csv_float(c.ci95_b, 100.0, 6),
                _csv_float(c.diff, 100.0, 6), _csv_float(c.ci95, 100.0, 6),
                _csv_float(c.ci_low, 100.0, 6), _csv_float(c.ci_high, 100.0, 6),
                _csv_float(c.statistic), _csv_float(c.p_value), _csv_float(c.p_holm),
                "" if c.n_nonzero is None else c.n_nonzero,
                "" if sig is None else str(sig).lower(), c.verdict(alpha), c.note or "",
            ]
        )
    return _csv_text(COMPARISON_CSV_HEADER, rows)


def render_published_csv(sources: Sequence[PublishedSource]) -> str:
    rows = [
        [src.label, src.citation, src.where, r.method, r.backbone, r.dataset, r.ways, r.shots,
         f"{r.accuracy:.2f}", f"{r.ci95:.2f}"]
        for src in sources
        for r in src.results
    ]
    return _csv_text(
        ["label", "citation", "where", "method", "backbone", "dataset", "ways", "shots",
         "accuracy_pct", "ci95_pct"],
        rows,
    )


# ---------------------------------------------------------------------------------------------
# LaTeX


def tex_escape(text: str) -> str:
    out = []
    for ch in str(text):
        out.append(
            {
                "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}", "±": r"$\pm$", "·": r"$\cdot$", "—": "---",
                "−": "$-$",
            }.get(ch, ch)
        )
    return "".join(out)


def _tex_acc(mean: float | None, ci: float | None, n: int | None) -> str:
    if mean is None:
        return "--"
    return f"${100 * mean:.2f} \\pm {100 * ci:.2f}$ ({n})"


def render_latex(table: ResultsTable, published: Sequence[PublishedSource] = ()) -> str:
    """Table fragments for ``\\input``; need ``\\usepackage{booktabs}``."""
    shots = table.shots
    lines = [
        "% Generated by fewshot_acdc.results; requires \\usepackage{booktabs}.",
        "% Accuracy: mean $\\pm$ 95% CI (episodes), in percent.",
        "\\begin{table}[t]",
        "\\centering",
        "\\small",
        "\\begin{tabular}{lll" + "c" * len(shots) + "rr" + "c" * 2 + "}",
        "\\toprule",
        "Backbone & Conv & Adapt & "
        + " & ".join(f"{table.ways}-way {k}-shot" for k in shots)
        + " & Params & Adapted & s/step ("
        + "/".join(f"{k}-shot" for k in shots)
        + ") & Peak MB ("
        + "/".join(f"{k}-shot" for k in shots)
        + ") \\\\",
        "\\midrule",
    ]
    datasets = table.datasets
    for dataset in datasets:
        if len(datasets) > 1:
            lines.append(
                f"\\multicolumn{{{7 + len(shots)}}}{{l}}{{\\emph{{{tex_escape(dataset or 'unknown')}}}}} \\\\"
            )
        for row in (r for r in table.rows if r.key.dataset == dataset):
            cells = []
            for k in shots:
                c = row.cells[k]
                if c.status == CELL_OK:
                    cells.append(_tex_acc(c.mean, c.ci95, c.episodes))
                elif c.status == CELL_CROSS:
                    cells.append(f"{_tex_acc(c.mean, c.ci95, c.episodes)}, {trained_label(c.trained_shots)}")
                elif c.status == CELL_CONFLICT:
                    cells.append("conflict")
                else:
                    cells.append("--")
            parts = [
                tex_escape(row.key.backbone_label), tex_escape(row.key.conv_label),
                tex_escape(_adapt_text(row)), *cells,
                fmt_params(row.total_parameters).replace(DASH, "--"),
                fmt_params(row.adapted_parameters).replace(DASH, "--"),
                "/".join(fmt_seconds(row.cells[k].seconds_per_meta_step) for k in shots).replace(DASH, "--"),
                "/".join(fmt_mb(row.cells[k].peak_memory_mb) for k in shots).replace(DASH, "--"),
            ]
            lines.append(" & ".join(parts) + " \\\\")
    if not table.rows:
        lines.append(f"\\multicolumn{{{7 + len(shots)}}}{{c}}{{no finished runs}} \\\\")
    lines += [
        "\\bottomrule",
        "\\end{tabular}",
        f"\\caption{{Our runs: {table.ways}-way accuracy (\\%) on the {tex_escape(table.split)} "
        "split, mean $\\pm$ 95\\% CI (episodes)."
        + (" A cell marked ``trained $k$-shot'' is a run meta-trained at another shot count "
           "than its column, evaluated at the column's." if any(
               c.status == CELL_CROSS for r in table.rows for c in r.cells.values()) else "")
        + "}",
        "\\label{tab:fewshot-results}",
        "\\end{table}",
    ]
    for src in published:
        lines += [
            "",
            f"% {src.label}: transcribed from the paper, not produced by this project.",
            "\\begin{table}[t]",
            "\\centering",
            "\\small",
            "\\begin{tabular}{ll" + "c" * len(shots) + "}",
            "\\toprule",
            "Method & Backbone & " + " & ".join(f"{table.ways}-way {k}-shot" for k in shots) + " \\\\",
            "\\midrule",
        ]
        keys = []
        for r in src.results:
            if (r.method, r.backbone) not in keys:
                keys.append((r.method, r.backbone))
        for method, backbone in keys:
            cells = []
            for k in shots:
                r = src.get(method, backbone, k, table.ways)
                cells.append(f"${r.accuracy:.2f} \\pm {r.ci95:.2f}$" if r else "--")
            lines.append(" & ".join([tex_escape(method), tex_escape(backbone_label(backbone)), *cells]) + " \\\\")
        lines += [
            "\\bottomrule",
            "\\end{tabular}",
            f"\\caption{{{tex_escape(src.label)}: {tex_escape(src.citation)} {tex_escape(src.where)}; "
            f"{tex_escape(src.setting)}. Not our runs.}}",
            f"\\label{{tab:published-{src.key}}}",
            "\\end{table}",
        ]
    return "\n".join(lines) + "\n"
