"""Results module: tables, figures and paired comparisons from finished run directories.

Reads only the files described in ``docs/run_directory.md``; see ``docs/results.md`` for the
rules and outputs. Typical use::

    from fewshot_acdc.results import write_report
    paths = write_report(["runs/"], "report/")          # everything, like the CLI

    from fewshot_acdc.results import collect_runs, build_table, paired_comparison
    records = collect_runs(["runs/"])                    # one RunRecord per run directory
    table = build_table(records)                         # rows: backbone x conv x adapt
    cmp = paired_comparison("runs/r18-acdc-1shot", "runs/r18-std-1shot", ways=5, shots=1)

Command line: ``python -m fewshot_acdc.results RUN_OR_PARENT [...] --out DIR``.
"""

from .compare import PairedComparison, apply_holm, compare_evals, default_comparisons, paired_comparison
from .figure import Series, draw_accuracy_vs_depth, figure_series, plot_accuracy_vs_depth
from .published import CHEN_2019, PUBLISHED, PUBLISHED_LABEL, PublishedResult, PublishedSource
from .render import fmt_acc, fmt_params
from .report import Report, ReportPaths, build_report, save_report, write_report
from .runs import EvalResult, RunIdentity, RunRecord, collect_runs, discover_runs, load_run
from .stats import PairedStats, holm_adjust, mean_ci95, paired_stats
from .table import Cell, CrossShot, ResultsTable, Row, RowKey, build_table

__all__ = [
    "CHEN_2019",
    "Cell",
    "CrossShot",
    "EvalResult",
    "PUBLISHED",
    "PUBLISHED_LABEL",
    "PairedComparison",
    "PairedStats",
    "PublishedResult",
    "PublishedSource",
    "Report",
    "ReportPaths",
    "ResultsTable",
    "Row",
    "RowKey",
    "RunIdentity",
    "RunRecord",
    "Series",
    "apply_holm",
    "build_report",
    "build_table",
    "collect_runs",
    "compare_evals",
    "default_comparisons",
    "discover_runs",
    "draw_accuracy_vs_depth",
    "figure_series",
    "fmt_acc",
    "fmt_params",
    "holm_adjust",
    "load_run",
    "mean_ci95",
    "paired_comparison",
    "paired_stats",
    "plot_accuracy_vs_depth",
    "save_report",
    "write_report",
]
