#!/usr/bin/env python
"""Probe inner step sizes at initialisation: does one inner step lower the support loss?

Before paying for a meta-training run, check that its inner step sizes do not overshoot at the
starting point. For each candidate ``inner_lr`` (one number, or ``ROLE=LR,...``) this builds the
configured backbone at its seed, adapts it one step on ``--episodes`` training episodes (train
mode, batch statistics, as in meta-training) and reports the support loss before and after the
step (mean over episodes) and the ratio after/before. A ratio above 1 means the step overshoots:
MAML cannot meta-learn through an inner step that makes the support loss worse at the start
(seen: ResNet10 ACDC-net with atoms 0.1 went from 1.74 to 3.6 and stayed at chance).

A lower support loss is necessary, not sufficient: the step must also carry to the task's query
set. Each row also reports the query loss and accuracy before and after the step(s) (query scored
with its own batch statistics, as in meta-training). Seen: ResNet18 ACDC-net ``atoms`` at 0.0005
lowered the support loss most (x0.54) and stayed at chance when meta-trained; the query columns
tell such a step apart before the run. ``--steps`` adapts several steps (the test-time count).

    FEWSHOT_DATA=../shared/data python experiments/inner_lr_probe.py --config configs/omniglot_grid.yaml \\
        --set backbone=resnet10 --set conv=acdc-net --lr atoms=0.1,default=0.4 --lr atoms=0.01,default=0.4

Results go to ``--out`` (JSON with the commit and machine) and are printed as a table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from fewshot_acdc.cli.train import parse_inner_lr  # noqa: E402
from fewshot_acdc.config import load_config  # noqa: E402
from fewshot_acdc.data import episode_loader  # noqa: E402
from fewshot_acdc.meta.functional import classification_loss, score_query  # noqa: E402
from fewshot_acdc.runs import provenance  # noqa: E402
from fewshot_acdc.runs.builders import build_maml, build_model  # noqa: E402
from fewshot_acdc.runs.data import open_split  # noqa: E402


def parse_setting(text: str):
    key, _, value = text.partition("=")
    if not key or not _:
        raise argparse.ArgumentTypeError(f"--set {text!r}: expected KEY=VALUE")
    import yaml
    return key.strip(), yaml.safe_load(value)


def probe(config, candidates, episodes: int, steps: int = 1):
    """For each candidate: ``{inner_lr, steps, support_loss_before/after, ratio, query_loss_before/after,
    query_accuracy_before/after}`` (means over the episodes; ``ratio`` is the support loss's)."""
    torch.manual_seed(config.seed)
    dataset = open_split(config, "train")
    batch = list(episode_loader(dataset, config.ways, config.shots, config.queries, seed=config.seed,
                                episodes=episodes))
    rows = []
    for inner_lr in candidates:
        torch.manual_seed(config.seed)  # the same initialisation for every candidate
        model = build_model(config, dataset.channels)
        maml = build_maml(config.replace(inner_lr=inner_lr), model)
        model.train()
        sums = {key: 0.0 for key in ("support_loss_before", "support_loss_after", "query_loss_before",
                                     "query_loss_after", "query_accuracy_before", "query_accuracy_after")}
        for index, episode in enumerate(batch):
            params = {name: p.detach() for name, p in model.named_parameters()}
            images, labels = episode.support_images, episode.support_labels
            adapted = maml.adapt(params, images, labels, steps=steps, create_graph=False)
            with torch.no_grad():
                for when, state in (("before", maml.task_start(params)), ("after", adapted)):
                    # the same atom-drop masks before and after: the difference is the step's alone
                    torch.manual_seed(config.seed + index)
                    sums[f"support_loss_{when}"] += float(classification_loss(model, state, images, labels))
                    loss, accuracy = score_query(model, state, episode.query_images, episode.query_labels)
                    sums[f"query_loss_{when}"] += float(loss)
                    sums[f"query_accuracy_{when}"] += float(accuracy)
        row = {"inner_lr": inner_lr, "steps": steps, **{key: total / len(batch) for key, total in sums.items()}}
        row["ratio"] = row["support_loss_after"] / row["support_loss_before"]
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", type=parse_setting, action="append", default=[], metavar="KEY=VALUE",
                        help="config override (repeatable), e.g. backbone=resnet10")
    parser.add_argument("--lr", type=parse_inner_lr, action="append", required=True, metavar="LR|ROLE=LR,...",
                        help="a candidate inner_lr (repeatable)")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1, help="inner steps per episode (default 1)")
    parser.add_argument("--out", help="JSON file for the results")
    args = parser.parse_args(argv)
    overrides = dict(args.set)
    config = load_config(args.config, overrides)
    torch.set_num_threads(config.threads or torch.get_num_threads())
    rows = probe(config, args.lr, args.episodes, args.steps)
    print(f"{config.backbone} {config.conv} adapt={config.adapt} {config.ways}-way {config.shots}-shot, "
          f"{args.episodes} episodes, {args.steps} inner step(s) at initialisation:")
    for row in rows:
        print(f"  inner_lr {json.dumps(row['inner_lr']):<45} support loss {row['support_loss_before']:.3f} -> "
              f"{row['support_loss_after']:.3f} (x{row['ratio']:.2f}); query loss {row['query_loss_before']:.3f} -> "
              f"{row['query_loss_after']:.3f}, accuracy {100 * row['query_accuracy_before']:.1f}% -> "
              f"{100 * row['query_accuracy_after']:.1f}%")
    if args.out:
        record = {"config": args.config, "overrides": overrides, "episodes": args.episodes, "steps": args.steps, "rows": rows,
                  "created": provenance.created_now(), "source": provenance.source_revision(),
                  "machine": provenance.machine()}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
