#!/usr/bin/env python
"""The ACDC paper's MAML comparison (its Figure 7) as a resumable grid.

backbone {resnet10, resnet18, resnet34} x conv {standard, acdc-net} x shots {1, 5} x adapt {all, atoms}
(``atoms`` only exists for ACDC backbones), one run directory per cell under ``--root``. A cell
whose ``summary.json`` says finished and whose test evaluation exists is skipped, a cell with a
``checkpoints/last.pt`` is resumed, so the grid can be stopped and restarted at any time. When
every cell is done, the results module writes the tables and the figure to ``<root>/report``.

    python experiments/closer_look_grid.py --root runs/closer_look            # the full grid (GPU days)
    python experiments/closer_look_grid.py --root runs/smoke --preset quick   # minutes on a CPU
    python experiments/closer_look_grid.py --dry-run                          # list the cells
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fewshot_acdc.config import load_config  # noqa: E402
from fewshot_acdc.runs.evaluation import evaluate_run  # noqa: E402
from fewshot_acdc.runs.training import train  # noqa: E402

BACKBONES = ("resnet10", "resnet18", "resnet34")
CONVS = ("none", "net")
SHOTS = (1, 5)
ADAPTS = ("all", "atoms")
PRESETS = {
    "closer-look": ROOT / "configs" / "closer_look_maml.yaml",
    "quick": ROOT / "configs" / "quick_builtin_head.yaml",
}
# Chen et al.'s schedule: 60000 meta-updates for 1-shot, 40000 for 5-shot.
CLOSER_LOOK_ITERATIONS = {1: 60000, 5: 40000}


def cells(backbones=BACKBONES, convs=CONVS, shots=SHOTS, adapts=ADAPTS):
    for backbone, acdc, shot, adapt in itertools.product(backbones, convs, shots, adapts):
        if acdc == "none" and adapt == "atoms":
            continue  # a standard conv has no atoms to adapt
        yield {"backbone": backbone, "acdc": acdc, "shots": shot, "adapt": adapt}


def cell_name(cell) -> str:
    conv = "standard" if cell["acdc"] == "none" else f"acdc-{cell['acdc']}"
    return f"{cell['backbone']}-{conv}-{cell['adapt']}-5w{cell['shots']}s"


def training_finished(run_dir: Path) -> bool:
    try:
        return json.loads((run_dir / "summary.json").read_text()).get("status") == "finished"
    except (OSError, json.JSONDecodeError):
        return False


def evaluated(run_dir: Path, shots: int) -> bool:
    return (run_dir / "eval" / f"test_5way_{shots}shot.json").is_file()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="runs/closer_look", help="where the cells' run directories go")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="closer-look")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument("--convs", nargs="+", default=list(CONVS), choices=CONVS)
    parser.add_argument("--shots", nargs="+", type=int, default=list(SHOTS))
    parser.add_argument("--adapts", nargs="+", default=list(ADAPTS), choices=ADAPTS)
    parser.add_argument("--data-root", help="override the preset's data_root")
    parser.add_argument("--iterations", type=int, help="override the schedule (e.g. for a smoke run)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and their state, run nothing")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="record results although the package code has uncommitted changes (the records say so "
                             "and keep a sha256 of the diff)")
    args = parser.parse_args(argv)

    root = Path(args.root)
    todo = list(cells(args.backbones, args.convs, args.shots, args.adapts))
    for index, cell in enumerate(todo, 1):
        run_dir = root / cell_name(cell)
        trained = training_finished(run_dir)
        state = ("finished" if trained and evaluated(run_dir, cell["shots"]) else "evaluate" if trained
                 else "resume" if (run_dir / "checkpoints" / "last.pt").is_file() else "new")
        print(f"[{index}/{len(todo)}] {cell_name(cell)}: {state}", flush=True)
        if args.dry_run or state == "finished":
            continue
        if state in ("new", "resume"):
            overrides = dict(cell, device=args.device)
            if args.preset == "closer-look":
                overrides["iterations"] = CLOSER_LOOK_ITERATIONS[cell["shots"]]
            if args.iterations:
                overrides["iterations"] = args.iterations
            if args.data_root:
                overrides["data_root"] = args.data_root
            config = load_config(PRESETS[args.preset], overrides)
            train(config, run_dir, resume=state == "resume", progress=False, allow_dirty=args.allow_dirty)
        evaluate_run(run_dir, device=args.device, allow_dirty=args.allow_dirty)
    if args.dry_run:
        return 0
    from fewshot_acdc.results import write_report
    paths = write_report([root], root / "report")
    print(f"report written to {root / 'report'}: {paths}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
