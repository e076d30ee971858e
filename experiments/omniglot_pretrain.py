#!/usr/bin/env python
"""Supervised pretraining on the Omniglot grid's meta-train classes: is ACDC-net as good as standard
convolutions when trained the way it needs, and why does Adam at 1e-3 fail it (issue 30)?

backbone {resnet10, resnet18, resnet34} x network {standard, ACDC-net m=8, ACDC-net m=16} x recipe:

* ``sgd``: SGD + Nesterov momentum 0.9, lr 0.05, weight decay 5e-4, cosine (configs/omniglot_pretrain.yaml);
* ``adam``: Adam at 1e-3, no weight decay, cosine (the outer loop's optimiser in every MAML cell so far);
* ACDC-net also ``adam`` with ``lr_scaling: kernel`` (fewshot_acdc.nn.scaling): the one change that
  tests the lead of issue 30 (Adam moves ACDC coefficients gamma times too slowly), and the fix.

Each cell is 15 epochs, resumable; finished cells are recorded (no checkpoints) under
``experiments/results/omniglot-pretrain/``, and their ``best.pt`` stays in ``--work`` for
``run_maml.py --init``. Two processes split the cells (``--shard 0/2``, ``--shard 1/2``):

    FEWSHOT_DATA=../shared/data python experiments/omniglot_pretrain.py --shard 0/2
    python experiments/omniglot_pretrain.py --dry-run
    python -m fewshot_acdc.results.pretraining experiments/results/omniglot-pretrain   # the table
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.grid_flags import add_grid_flags, common_overrides  # noqa: E402
from fewshot_acdc.runs.grid import Cell, run_grid  # noqa: E402

CONFIG = ROOT / "configs" / "omniglot_pretrain.yaml"
BACKBONES = ("resnet18", "resnet10", "resnet34")  # ResNet18 first: the diagnosis cells
ADAM = {"pretrain_optimizer": "adam", "pretrain_lr": 0.001, "pretrain_weight_decay": 0.0}
SGD = {}  # the config's recipe


def networks():
    """(name, overrides) of every network, standard first."""
    yield "standard", {"conv": "standard"}
    for atoms in (8, 16):
        yield f"acdc-net-m{atoms}", {"conv": "acdc-net", "atoms": atoms}


def recipes(network: str):
    yield "sgd", SGD
    yield "adam", ADAM
    if network != "standard":
        yield "adam-kernel", {**ADAM, "lr_scaling": "kernel"}


def pretrain_cells(backbones=BACKBONES):
    cells = []
    for backbone in backbones:
        for network, net in networks():
            for recipe, settings in recipes(network):
                cells.append(Cell(f"{backbone}-{network}-{recipe}", {"backbone": backbone, **net, **settings},
                                  eval_shots=(), pretraining=True))
    # The order the diagnosis needs: ResNet18 m=8 under each recipe, then the rest.
    first = [c for c in cells if c.name.startswith("resnet18-acdc-net-m8-") or c.name.startswith("resnet18-standard")]
    return first + [c for c in cells if c not in first]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="runs/omniglot-pretrain", help="run directories with checkpoints")
    parser.add_argument("--record", default=str(ROOT / "experiments" / "results" / "omniglot-pretrain"))
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument("--cells", nargs="+", help="only these cells (names as --dry-run lists them)")
    parser.add_argument("--shard", default="0/1", help="K/N: this process takes cells K, K+N, K+2N, ...")
    add_grid_flags(parser)
    args = parser.parse_args(argv)
    shard, shards = (int(part) for part in args.shard.split("/"))
    cells = pretrain_cells(args.backbones)
    if args.cells:
        unknown = sorted(set(args.cells) - {c.name for c in cells})
        if unknown:
            parser.error(f"unknown cells {', '.join(unknown)}; cells: {', '.join(c.name for c in cells)}")
        cells = [c for c in cells if c.name in args.cells]
    common = common_overrides(args)
    run_grid(cells[shard::shards], CONFIG, args.work, record_root=args.record, common=common, dry_run=args.dry_run,
             allow_dirty=args.allow_dirty)
    return 0


if __name__ == "__main__":
    sys.exit(main())
