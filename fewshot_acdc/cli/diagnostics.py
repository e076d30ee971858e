"""``python -m fewshot_acdc.results.diagnostics RUN --out FIGURE``: a run's training diagnostics as one
figure and its numbers (fewshot_acdc.results.diagnostics)."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ..results.diagnostics import plot_diagnostics


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fewshot_acdc.results.diagnostics",
                                     description="Plot a run's training diagnostics (losses, accuracy, gradient norms per role).")
    parser.add_argument("run", help="run directory (holds metrics.jsonl)")
    parser.add_argument("--out", required=True, help="figure file (.png or .svg); the numbers go to the same name .csv")
    args = parser.parse_args(argv)
    try:
        path = plot_diagnostics(args.run, args.out)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path} and {path.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
