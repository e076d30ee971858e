#!/usr/bin/env python
"""The ACDC paper's MAML comparison on Omniglot, as a resumable grid sized for a CPU.

backbone {conv4, resnet10, resnet18} x conv {standard, acdc-net} x adapt {all, atoms} x shots {1, 5}
(``atoms`` only exists for ACDC-net), each cell meta-trained once per shot count with
``configs/omniglot_grid.yaml`` and tested 5-way 1-shot and 5-way 5-shot on the same 600 fixed test
episodes (15 queries per class) as every other cell. Cells train in ``--work`` (checkpoints,
not committed) and are recorded without checkpoints under ``--record`` as they finish; a
recorded cell is skipped, a checkpointed one resumes, so the grid can be stopped at any time and
continued in a later session. The report (tables with 95% CIs, paired Wilcoxon/Holm comparisons,
accuracy-vs-depth figure) is rendered from the records:

    FEWSHOT_DATA=../shared/data python experiments/omniglot_grid.py                 # everything not recorded yet
    FEWSHOT_DATA=../shared/data python experiments/omniglot_grid.py --backbones conv4
    python experiments/omniglot_grid.py --dry-run                                   # cells and their state
    python -m fewshot_acdc.results experiments/results/omniglot-grid --out experiments/results/omniglot-grid/report
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fewshot_acdc.runs.grid import cells_product, run_grid  # noqa: E402

BACKBONES = ("conv4", "resnet10", "resnet18")
CONVS = ("standard", "acdc-net")
ADAPTS = ("all", "atoms")
SHOTS = (1, 5)
CONFIG = ROOT / "configs" / "omniglot_grid.yaml"


def grid_cells(backbones=BACKBONES, convs=CONVS, adapts=ADAPTS, shots=SHOTS):
    return cells_product(
        lambda cell: f"{cell['backbone']}-{cell['conv']}-{cell['adapt']}-5w{cell['shots']}s",
        {"backbone": backbones, "shots": shots, "conv": convs, "adapt": adapts},
        keep=lambda cell: not (cell["conv"] == "standard" and cell["adapt"] == "atoms"),
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="runs/omniglot-grid", help="run directories with checkpoints")
    parser.add_argument("--record", default=str(ROOT / "experiments" / "results" / "omniglot-grid"),
                        help="where finished cells are recorded (committed, no checkpoints)")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument("--convs", nargs="+", default=list(CONVS), choices=CONVS)
    parser.add_argument("--adapts", nargs="+", default=list(ADAPTS), choices=ADAPTS)
    parser.add_argument("--shots", nargs="+", type=int, default=list(SHOTS))
    parser.add_argument("--data-root", help="folder holding omniglot/ (default: $FEWSHOT_DATA, else ./data)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and their state, run nothing")
    parser.add_argument("--no-report", action="store_true", help="do not render the report afterwards")
    args = parser.parse_args(argv)

    common = {"device": args.device, **({"data_root": args.data_root} if args.data_root else {})}
    cells = grid_cells(args.backbones, args.convs, args.adapts, args.shots)
    run_grid(cells, CONFIG, args.work, record_root=args.record, common=common, dry_run=args.dry_run)
    if not (args.dry_run or args.no_report):
        from fewshot_acdc.results import write_report
        paths = write_report([args.record], Path(args.record) / "report")
        print(f"report written to {Path(args.record) / 'report'}: {paths}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
