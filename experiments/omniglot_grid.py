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

What differs between backbones is in ``BACKBONE_SETTINGS`` (with the reason). ``--all-runs CELL``
trains CELL again on each of Lake's minimal background sets alone (``omniglot_background: small1``
and ``small2``) and scores it on the all_runs benchmark (20-way within-alphabet one-shot):

    FEWSHOT_DATA=../shared/data python experiments/omniglot_grid.py --all-runs conv4-standard-all-5w1s
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.grid_flags import add_grid_flags, common_overrides  # noqa: E402
from fewshot_acdc.runs.grid import Cell, cells_product, run_grid  # noqa: E402

BACKBONES = ("conv4", "resnet10", "resnet18")
CONVS = ("standard", "acdc-net")
ADAPTS = ("all", "atoms")
SHOTS = (1, 5)
CONFIG = ROOT / "configs" / "omniglot_grid.yaml"
MINIMAL_BACKGROUNDS = ("small1", "small2")

# What each backbone changes in configs/omniglot_grid.yaml, and why.
_RESNET_SCHEDULE = {"iterations": 500, "meta_batch": 4}  # CPU budget: a ResNet10 meta-step costs ~4x Conv4's
BACKBONE_SETTINGS = {
    "conv4": {},
    "resnet10": _RESNET_SCHEDULE,
    "resnet18": _RESNET_SCHEDULE,
}
# Inner step sizes per backbone (experiments/inner_lr_probe.py measures the support loss after one
# inner step at initialisation, after/before; records in experiments/results/inner-lr-probe/).
# Default rate: MAML's 0.4, unless the standard cell overshoots much more than Conv4's does at 0.4
# (x1.64, and Conv4 learns to 92%): ResNet10 x0.59 -> 0.4; ResNet18 x8.9 at 0.4, x1.60 at 0.1 -> 0.1.
DEFAULT_LR = {"conv4": 0.4, "resnet10": 0.4, "resnet18": 0.1}
# ACDC atom rate: an atom's inner gradient sums over every channel pair of its layer, so it grows
# with width. The largest of 0.1, 0.03, 0.01, 0.003 with which one inner step of the ACDC-net `all`
# cell lowers the support loss: ResNet10 0.01 x1.29, 0.003 x0.35 -> 0.003 (adapt atoms: x0.72,
# x0.52); ResNet18 (default 0.1) 0.01 x1.47, 0.003 x0.97 -> 0.003 (adapt atoms: x0.96, x0.82).
# Conv4: no rate qualifies, its head overshoots at 0.4 as the standard cell's does (0.01 x1.18);
# it keeps 0.1, the best of a 75-step trial (x1.66, as standard's x1.64).
ACDC_ATOM_LR = {"conv4": 0.1, "resnet10": 0.003, "resnet18": 0.003}
SIZED_BACKBONES = tuple(ACDC_ATOM_LR)
# Tried and not kept (experiments/results/omniglot-grid-alternatives/): ResNet18 `atoms` at the atom
# rate where its own one-step probe's support loss is lowest (0.0005, x0.54; 0.003 x0.82) fits the
# support set and not the task: validation 20.1% at 500 meta-steps against 0.003's 28.8%, so the
# grid keeps 0.003. The support loss alone does not choose a step; the probe also reports the query.


def cell_settings(cell) -> dict:
    if cell["backbone"] not in SIZED_BACKBONES:
        raise SystemExit(f"{cell['backbone']}: no inner step sizes chosen for the grid yet (see ACDC_ATOM_LR in "
                         f"{Path(__file__).name}); sized backbones: {', '.join(SIZED_BACKBONES)}")
    settings = dict(BACKBONE_SETTINGS[cell["backbone"]])
    settings["inner_lr"] = {"default": DEFAULT_LR[cell["backbone"]]}
    if cell["conv"] == "acdc-net":
        settings["inner_lr"]["atoms"] = ACDC_ATOM_LR[cell["backbone"]]
    return settings


def cell_name(cell) -> str:
    return f"{cell['backbone']}-{cell['conv']}-{cell['adapt']}-5w{cell['shots']}s"


def grid_cells(backbones=SIZED_BACKBONES, convs=CONVS, adapts=ADAPTS, shots=SHOTS):
    return cells_product(
        cell_name, {"backbone": backbones, "shots": shots, "conv": convs, "adapt": adapts},
        keep=lambda cell: not (cell["conv"] == "standard" and cell["adapt"] == "atoms"),
        extra=cell_settings,
    )


# all_runs is 20-way: a cell can also be meta-trained 20-way for it (as MAML trains N-way for N-way
# tests) instead of widening its 5-way head. A 20-way task has 4x the images of a 5-way one, so
# these cells take 500 meta-steps of 4 tasks (CPU budget).
TWENTY_WAY_SETTINGS = {"ways": 20, "iterations": 500, "meta_batch": 4}


def all_runs_cells(name: str, ways: int = 5, head_init: str = "per-class", iterations: int = None,
                   backgrounds=MINIMAL_BACKGROUNDS):
    """``name`` (a grid cell) trained on each minimal background set alone, scored on all_runs;
    ``ways=20``: meta-trained 20-way (``TWENTY_WAY_SETTINGS``), named ``...-20w1s-...``;
    ``head_init='shared'`` (UNICORN-MAML: the start a widened head gives 20-way tasks is the one
    every training task had), named ``...-shared-...``; ``iterations``: meta-steps other than the
    cell's, named ``...-<N>it-...``; ``backgrounds``: which of the minimal sets (default both)."""
    (cell,) = [c for c in grid_cells() if c.name == name] or [None]
    if cell is None:
        raise SystemExit(f"--all-runs {name}: not a grid cell; cells: {', '.join(c.name for c in grid_cells())}")
    if ways not in (5, 20):
        raise SystemExit(f"--all-runs-ways {ways}: 5 (the cell as it is) or 20 (trained 20-way for the benchmark)")
    overrides, base = dict(cell.overrides), name
    if ways == 20:
        overrides.update(TWENTY_WAY_SETTINGS)
        base = name.replace("-5w", "-20w")
    if head_init != "per-class":
        overrides["head_init"] = head_init
        base += f"-{head_init}"
    if iterations is not None:
        overrides["iterations"] = iterations
        base += f"-{iterations}it"
    return [Cell(f"{base}-{background}", {**overrides, "omniglot_background": background},
                 eval_shots=(), benchmarks=("omniglot-all-runs",)) for background in backgrounds]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="runs/omniglot-grid", help="run directories with checkpoints")
    parser.add_argument("--record", default=str(ROOT / "experiments" / "results" / "omniglot-grid"),
                        help="where finished cells are recorded (committed, no checkpoints)")
    parser.add_argument("--backbones", nargs="+", default=list(SIZED_BACKBONES), choices=BACKBONES)
    parser.add_argument("--convs", nargs="+", default=list(CONVS), choices=CONVS)
    parser.add_argument("--adapts", nargs="+", default=list(ADAPTS), choices=ADAPTS)
    parser.add_argument("--shots", nargs="+", type=int, default=list(SHOTS))
    parser.add_argument("--all-runs", metavar="CELL",
                        help="instead of the grid: train CELL on small1 and on small2 alone, score all_runs")
    parser.add_argument("--all-runs-ways", type=int, default=5, choices=(5, 20),
                        help="with --all-runs: 5 (the cell as it is, its head widened for the 20-way benchmark) "
                             "or 20 (meta-trained 20-way)")
    parser.add_argument("--all-runs-head-init", default="per-class", choices=("per-class", "shared"),
                        help="with --all-runs: where each task's head starts (shared: UNICORN-MAML)")
    parser.add_argument("--all-runs-iterations", type=int, help="with --all-runs: meta-steps (default: the cell's)")
    parser.add_argument("--all-runs-backgrounds", nargs="+", default=list(MINIMAL_BACKGROUNDS),
                        choices=MINIMAL_BACKGROUNDS, help="with --all-runs: the minimal background sets (default both)")
    parser.add_argument("--lr-scaling", default="none", choices=("none", "kernel"),
                        help="kernel: the outer Adam trains ACDC coefficients at gamma x its rate (fewshot_acdc.nn."
                             "scaling; issue 30's fix); cells recorded under omniglot-grid-kernel/ (standard "
                             "convolutions are unaffected: their cells are the grid's)")
    parser.add_argument("--no-report", action="store_true", help="do not render the report afterwards")
    add_grid_flags(parser)
    args = parser.parse_args(argv)

    common = common_overrides(args)
    if args.lr_scaling != "none":
        if "standard" in args.convs:
            parser.error("--lr-scaling changes nothing for standard convolutions; pass --convs acdc-net")
        common["lr_scaling"] = args.lr_scaling
        if args.record == parser.get_default("record"):
            args.record = str(ROOT / "experiments" / "results" / f"omniglot-grid-{args.lr_scaling}")
        if args.work == parser.get_default("work"):
            args.work = f"runs/omniglot-grid-{args.lr_scaling}"
    cells = all_runs_cells(args.all_runs, args.all_runs_ways, args.all_runs_head_init,
                           args.all_runs_iterations, args.all_runs_backgrounds) if args.all_runs else grid_cells(args.backbones, args.convs, args.adapts,
                                                                           args.shots)
    run_grid(cells, CONFIG, args.work, record_root=args.record, common=common, dry_run=args.dry_run,
             allow_dirty=args.allow_dirty)
    if not (args.dry_run or args.no_report):
        from fewshot_acdc.results import write_report
        paths = write_report([args.record], Path(args.record) / "report")
        print(f"report written to {Path(args.record) / 'report'}: {paths}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
