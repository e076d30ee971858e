#!/usr/bin/env python
"""MAML from pretrained backbones on Omniglot, trained to a plateau (issue 31, part 1).

backbone {resnet10, resnet18, resnet34} x {standard `all`, ACDC-net m=8 `all`, ACDC-net m=8 `atoms`}
x shots {1, 5}, each meta-trained from its network's pretrained backbone (experiments/omniglot_pretrain.py:
of the network's recipes, the one with the best few-shot validation, a rule applied to the recorded
summaries, never hand-picked) with ``configs/omniglot_grid.yaml``'s episodes and inner loop, until
validation plateaus (``plateau_validations: 3``: no gain above the best earlier validation's 95% CI
over the last three validations, checked every 100 meta-steps; at most 2000). ACDC cells use
``lr_scaling: kernel`` (the fix of issue 30). Tested 5-way 1-shot and 5-shot on the grid's 600 fixed
test episodes, so every pair is an episode-by-episode comparison with the from-scratch grid.

The no-meta-training rows (``--no-meta``): each pretrained backbone with a zero 5-way head, fine-tuned
on every support set at test time (``head``: Chen et al.'s Baseline; ``atoms``: only the atoms of the
pretrained ACDC backbone, the Atom Swapping setting; ``all``), 0 meta-steps:

    FEWSHOT_DATA=../shared/data python experiments/omniglot_pretrained_grid.py --backbones resnet18 --shots 1
    FEWSHOT_DATA=../shared/data python experiments/omniglot_pretrained_grid.py --no-meta --backbones resnet18
    python -m fewshot_acdc.results experiments/results/omniglot-pretrained-grid --out experiments/results/omniglot-pretrained-grid/report
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.grid_flags import add_grid_flags, common_overrides  # noqa: E402
from fewshot_acdc.runs.grid import Cell, run_grid  # noqa: E402
from experiments.omniglot_grid import ACDC_ATOM_LR, DEFAULT_LR  # noqa: E402

CONFIG = ROOT / "configs" / "omniglot_grid.yaml"
BACKBONES = ("resnet18", "resnet10", "resnet34")
NETWORKS = {"standard": {"conv": "standard"}, "acdc-net": {"conv": "acdc-net", "atoms": 8}}
META = {"iterations": 2000, "plateau_validations": 3, "val_every": 100, "log_every": 50}
# ResNet34 has no inner step sizes of its own yet (experiments/inner_lr_probe.py): it takes ResNet18's,
# the deeper of the two sized backbones.
INNER_LR_BACKBONE = {"resnet10": "resnet10", "resnet18": "resnet18", "resnet34": "resnet18"}
# Test-time fine-tuning of the no-meta rows: a zero head needs more steps than MAML's meta-learned
# start; 50 steps of full-batch SGD on the support set at the backbone's inner rates (inner_lr below;
# Chen et al. train their Baseline head 100 iterations of batch 4 with SGD at 0.01 on features, a
# comparable budget).
NO_META = {"iterations": 0, "inner_steps_eval": 50}


def pretrained_backbone(pretrain_record: Path, pretrain_work: Path, backbone: str, network: str) -> Path:
    """The pretraining run of ``network`` on ``backbone`` with the best few-shot validation among its
    recipes (recorded summaries), as the work directory that holds its checkpoints."""
    prefix = f"{backbone}-{network}-m8-" if network != "standard" else f"{backbone}-standard-"
    candidates = []
    for summary in sorted(pretrain_record.glob(f"{prefix}*/summary.json")):
        data = json.loads(summary.read_text())
        candidates.append((data["best_val_accuracy"], summary.parent.name))
    if not candidates:
        raise SystemExit(f"no recorded pretraining run {prefix}* under {pretrain_record}: run "
                         f"experiments/omniglot_pretrain.py --backbones {backbone} first")
    best = max(candidates)[1]
    if not (pretrain_work / best / "checkpoints" / "best.pt").is_file():
        raise SystemExit(f"{pretrain_work / best}/checkpoints/best.pt is missing (checkpoints are not committed): "
                         f"re-run experiments/omniglot_pretrain.py --cells {best}")
    return pretrain_work / best


def inner_lr(backbone: str, network: str) -> dict:
    sized = INNER_LR_BACKBONE[backbone]
    rates = {"default": DEFAULT_LR[sized]}
    if network != "standard":
        rates["atoms"] = ACDC_ATOM_LR[sized]
    return rates


def cells(backbones, shots, no_meta: bool, pretrain_record: Path, pretrain_work: Path):
    out = []
    for backbone in backbones:
        for network, net in NETWORKS.items():
            init = str(pretrained_backbone(pretrain_record, pretrain_work, backbone, network))
            common = {"backbone": backbone, **net, "init": init, "inner_lr": inner_lr(backbone, network)}
            if network != "standard":
                common["lr_scaling"] = "kernel"
            if no_meta:
                for adapt in ("head", "all") + (("atoms",) if network != "standard" else ()):
                    out.append(Cell(f"{backbone}-{network}-{adapt}-no-meta", {**common, **NO_META, "adapt": adapt,
                                                                               "shots": 1}, eval_shots=(1, 5)))
                continue
            for adapt in ("all",) + (("atoms",) if network != "standard" else ()):
                for shot in shots:
                    out.append(Cell(f"{backbone}-{network}-{adapt}-5w{shot}s", {**common, **META, "adapt": adapt,
                                                                                 "shots": shot}))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="runs/omniglot-pretrained-grid")
    parser.add_argument("--record", default=str(ROOT / "experiments" / "results" / "omniglot-pretrained-grid"))
    parser.add_argument("--pretrain-record", default=str(ROOT / "experiments" / "results" / "omniglot-pretrain"))
    parser.add_argument("--pretrain-work", default="runs/omniglot-pretrain")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 5])
    parser.add_argument("--no-meta", action="store_true", help="the no-meta-training rows instead")
    parser.add_argument("--cells", nargs="+", help="only these cells")
    add_grid_flags(parser)
    args = parser.parse_args(argv)
    chosen = cells(args.backbones, args.shots, args.no_meta, Path(args.pretrain_record), Path(args.pretrain_work))
    if args.cells:
        chosen = [c for c in chosen if c.name in args.cells]
    common = common_overrides(args)
    run_grid(chosen, CONFIG, args.work, record_root=args.record, common=common, dry_run=args.dry_run,
             allow_dirty=args.allow_dirty)
    return 0


if __name__ == "__main__":
    sys.exit(main())
