"""``python -m fewshot_acdc.results RUN_OR_PARENT [...] --out DIR`` (see ``--help``): the comparison
table and report of run directories (fewshot_acdc.results)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from ..results.compare import DEFAULT_ALPHA
from ..results.report import build_report, save_report


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fewshot_acdc.results",
        description=(
            "Collect finished run directories and write the 5-way 1-shot / 5-shot comparison "
            "as Markdown, CSV, LaTeX, JSON, paired comparisons and the accuracy-vs-depth "
            "figure. Unfinished, unevaluated or corrupt runs are listed with the reason."
        ),
    )
    p.add_argument("runs", nargs="+", metavar="RUN_OR_PARENT",
                   help="run directories, or directories to search for runs below")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    p.add_argument("--split", default="test", help="evaluation split to report (default: test)")
    p.add_argument("--ways", type=int, default=5, help="N-way of the table (default: 5)")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5], metavar="K",
                   help="shot counts, one column each (default: 1 5)")
    p.add_argument("--no-published", action="store_true",
                   help="leave out the published reference numbers")
    p.add_argument("--include-unfinished", action="store_true",
                   help="let unfinished runs that already have an evaluation fill table cells "
                        "(marked as such)")
    p.add_argument("--compare", nargs=2, action="append", default=[], metavar=("RUN_A", "RUN_B"),
                   help="also compare these two run directories (A - B) at every column; "
                        "may be repeated")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help="significance level for the verdicts (Holm-adjusted; default 0.05)")
    p.add_argument("--no-episodes", action="store_true",
                   help="leave per-episode accuracies out of results.json")
    p.add_argument("--pretraining", action="store_true",
                   help="render the supervised-pretraining table (pretrain.py runs) instead: pretraining.md/.json")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when any run has a problem or a cell is in conflict")
    return p


PROG = "python -m fewshot_acdc.results"


class OutputError(Exception):
    """``--out`` cannot take the report; the message says why and what to do."""


def check_output_dir(out: str | os.PathLike) -> Path:
    """``out`` made (with its parents) and shown writable, before any run is read: raises
    :class:`OutputError` for a path that is a file, lies below a file, or cannot be written
    (permissions, a read-only filesystem)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a directory; choose another --out (or move the file away)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(prefix=".write-test.", dir=out)
        os.close(descriptor)
        os.unlink(probe)
    except NotADirectoryError:
        blocker = next((parent for parent in out.parents if parent.is_file()), None)
        where = f" ({blocker} is a file)" if blocker is not None else ""
        raise OutputError(f"--out {out} cannot be created below a file{where}; choose another --out") from None
    except OSError as error:
        raise OutputError(f"cannot write the report to --out {out}: {error.strerror or error}; "
                          "choose a writable --out") from None
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        check_output_dir(args.out)
        return _main(args)
    except OutputError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a write failing after the check (a full disk): one line, not a traceback
        name = f"{error.filename}: " if getattr(error, "filename", None) else ""
        print(f"{PROG}: error: cannot write the report: {name}{error.strerror or error}", file=sys.stderr)
        return 1


def _main(args: argparse.Namespace) -> int:
    if args.pretraining:
        from ..results.pretraining import collect_pretraining, write_pretraining_report
        written = write_pretraining_report(args.runs, args.out)
        print(f"{len(collect_pretraining(args.runs))} pretraining run(s) in the table")
        for path in written:
            print(f"wrote {path}")
        return 0
    report = build_report(
        args.runs,
        ways=args.ways,
        shots=args.shots,
        split=args.split,
        include_unfinished=args.include_unfinished,
        published=not args.no_published,
        compare=[tuple(pair) for pair in args.compare],
        alpha=args.alpha,
    )
    paths = save_report(report, args.out, include_episodes=not args.no_episodes)
    used = {r.path for row in report.table.rows for r in row.runs}
    print(f"{len(report.records)} run(s) found, {len(used)} used in the table, "
          f"{len(report.table.rows)} row(s), {len(report.comparisons)} comparison(s).")
    problems = report.problem_runs
    for r in problems:
        print(f"  {r.name} [{r.status}]: {'; '.join(r.problems)}", file=sys.stderr)
    for p in report.table.problems:
        print(f"  {p}", file=sys.stderr)
    for path in paths.all():
        print(f"wrote {path}")
    if args.strict and (problems or report.table.problems):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
