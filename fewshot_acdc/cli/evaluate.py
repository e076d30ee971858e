"""``python evaluate.py --run <dir>``: score a trained run on fixed test episodes.

Writes ``eval/<split>_<ways>way_<shots>shot.json`` (mean accuracy, 95% CI, per-episode
accuracies and identities) into the run directory; with ``--episodes``, ``--inner-steps-eval`` or
``--checkpoint`` other than the run's own, ``eval/protocols/<...>_<what differs>.json`` instead,
so the run's recorded result is never replaced. ``--benchmark omniglot-all-runs`` scores Lake et
al.'s 20-way within-alphabet one-shot benchmark instead.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ..config import DEVICES
from ..vocabulary import ADAPT_SCOPES
from ..vocabulary import DISTRIBUTED_TIMEOUT_SECONDS as DEFAULT_TIMEOUT_SECONDS
from .common import USER_ERRORS, ArgumentParser, add_allow_dirty_flag, add_debug_flag, report_error
from .train import parse_inner_lr

BENCHMARKS = ("episodes", "omniglot-all-runs")


def _step_counts(text: str):
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give inner step counts >= 0 separated by commas, e.g. 1,3,5,10")
    return counts


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number >= 1")
    return value


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="evaluate.py", description="Evaluate a MAML run on fixed test episodes.")
    # --run-dir: the same; under torchrun, whose own parser takes --run for an abbreviation of its --run-path
    parser.add_argument("--run", "--run-dir", dest="run",
                        help="run directory written by run_maml.py (with --pretrained: where to write the new run)")
    parser.add_argument("--pretrained", metavar="PRETRAIN_RUN",
                        help="score a pretraining run (pretrain.py) with no meta-training: a zero N-way head, the "
                             "--adapt scope fine-tuned on each support set (Chen et al.'s Baseline: --adapt head); "
                             "recorded as a run of 0 meta-steps in --run (default PRETRAIN_RUN-no-meta-ADAPT)")
    parser.add_argument("--adapt", choices=ADAPT_SCOPES, help="with --pretrained: the scope fine-tuned at test time")
    parser.add_argument("--inner-lr", type=parse_inner_lr, metavar="LR|ROLE=LR,...",
                        help="with --pretrained: the fine-tuning step size(s)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument("--benchmark", choices=BENCHMARKS, default="episodes")
    parser.add_argument("--shots", type=int, nargs="+", help="shot counts to evaluate (default: the run's)")
    parser.add_argument("--ways", type=int, help="default: the run's")
    parser.add_argument("--episodes", type=_positive,
                        help="fixed test episodes per shot count (default: test_episodes in the run's config.yaml; "
                             "another count writes eval/protocols/..., never the run's own eval file)")
    parser.add_argument("--inner-steps-eval", type=int,
                        help="inner steps at test (default: the run's; another count writes eval/protocols/...)")
    parser.add_argument("--select-steps", type=_step_counts, metavar="N,N,...",
                        help="choose the inner steps among these on the validation split's fixed episodes "
                             "(--select-episodes of them, the evaluation's ways and 1 shot; recorded in "
                             "eval/selection/inner-steps_val_*.json), then evaluate with the chosen count")
    parser.add_argument("--select-episodes", type=_positive, default=100)
    parser.add_argument("--split", choices=("train", "val", "test"), default="test")
    parser.add_argument("--data-root")
    parser.add_argument("--all-runs", help="path to Omniglot's all_runs.zip (or folder) for --benchmark omniglot-all-runs")
    parser.add_argument("--eval-batch", type=int, metavar="EPISODES",
                        help="episodes adapted together with torch.func.vmap (1: one at a time; default: the run's "
                             "eval_batch, else 1 on a CPU and a memory-bounded stack on a GPU)")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: one per core)")
    parser.add_argument("--quiet", action="store_true")
    add_allow_dirty_flag(parser)
    parser.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS, metavar="SECONDS",
                        help="under torchrun (the ranks split the episodes): how long a rank waits for the others "
                             f"before the job fails (default {DEFAULT_TIMEOUT_SECONDS:g})")
    add_debug_flag(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.pretrained is None and args.run is None:
        parser.error("give --run RUN_DIR (a meta-trained run) or --pretrained PRETRAIN_RUN (a pretraining run)")
    if args.pretrained is None and (args.adapt is not None or args.inner_lr is not None):
        parser.error("--adapt and --inner-lr choose the test-time fine-tuning of --pretrained; a meta-trained run "
                     "is scored with the scope and step sizes it was trained with")
    if args.pretrained is not None:
        return _score_pretrained(args)
    from ..runs.evaluation import evaluate_omniglot_all_runs, evaluate_run, select_inner_steps
    if args.threads is not None:
        import torch
        torch.set_num_threads(args.threads)
    from ..runs import distributed
    prog, group = "evaluate.py", distributed.SINGLE_PROCESS
    try:
        # Under torchrun the ranks split the episodes; rank 0 writes the files and prints.
        group = distributed.start(args.device, timeout_seconds=args.dist_timeout)
        if group.is_distributed:
            prog = f"evaluate.py (rank {group.rank} of {group.world_size})"
        print_ = print if group.is_main else (lambda *arguments, **keywords: None)
        if args.select_steps:
            if args.inner_steps_eval is not None:
                raise ValueError("--select-steps chooses the inner steps; drop --inner-steps-eval")
            ways = 20 if args.benchmark == "omniglot-all-runs" else args.ways
            selection = select_inner_steps(args.run, args.select_steps, ways=ways, shots=1,
                                           episodes=args.select_episodes, checkpoint=args.checkpoint,
                                           device=args.device, eval_batch=args.eval_batch, distributed=group,
                                           allow_dirty=args.allow_dirty)
            print_("validation " + ", ".join(f"{row['inner_steps_eval']} steps {100 * row['mean_accuracy']:.2f}%"
                                             for row in selection["candidates"])
                   + f" ({selection['ways']}-way 1-shot, {selection['episodes']} episodes): "
                   f"{selection['chosen']} steps")
            args.inner_steps_eval = selection["chosen"]
        if args.benchmark == "omniglot-all-runs":
            record = evaluate_omniglot_all_runs(args.run, all_runs=args.all_runs, checkpoint=args.checkpoint,
                                                inner_steps_eval=args.inner_steps_eval, device=args.device,
                                                eval_batch=args.eval_batch, distributed=group,
                                                allow_dirty=args.allow_dirty)
            print_(f"omniglot all_runs (20-way within-alphabet one-shot): error rate "
                  f"{100 * record['error_rate']:.2f}% over {record['runs']} runs; 5-way 1-shot within-alphabet "
                  f"episodes: {100 * record['five_way_accuracy']:.2f}% +- {100 * record['five_way_ci95']:.2f}%")
            return 0
        def show(record, path) -> None:  # as each file is written: a later failure cannot swallow it
            protocol = f", {record['protocol']}" if record.get("protocol") else ""
            print_(f"{record['split']} {record['ways']}-way {record['shots']}-shot: "
                   f"{100 * record['mean_accuracy']:.2f}% +- {100 * record['ci95']:.2f}% "
                   f"({record['episodes']} episodes, set {record['episode_set']}{protocol}) -> {path}")
        evaluate_run(args.run, checkpoint=args.checkpoint, shots=args.shots, ways=args.ways,
                     episodes=args.episodes, inner_steps_eval=args.inner_steps_eval,
                     split=args.split, data_root=args.data_root, device=args.device,
                     eval_batch=args.eval_batch, progress=not args.quiet, distributed=group,
                     allow_dirty=args.allow_dirty, on_record=show)
    except USER_ERRORS as error:  # CheckpointError, data and output errors
        return report_error(prog, error, args.debug)
    except KeyboardInterrupt:  # nothing to keep: an eval file is written whole or not at all
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        distributed.stop(group)
    return 0


def _score_pretrained(args) -> int:
    from pathlib import Path

    from ..runs.pretraining import score_pretrained
    if args.threads is not None:
        import torch
        torch.set_num_threads(args.threads)
    overrides = {key: value for key, value in (("adapt", args.adapt), ("inner_lr", args.inner_lr),
                                               ("inner_steps_eval", args.inner_steps_eval), ("ways", args.ways),
                                               ("test_episodes", args.episodes), ("device", args.device),
                                               ("data_root", args.data_root), ("eval_batch", args.eval_batch))
                 if value is not None}
    if args.shots:
        overrides["shots"] = args.shots[0]
    out = Path(args.run) if args.run else Path(f"{Path(args.pretrained)}-no-meta-{args.adapt or 'all'}")
    try:
        for record in score_pretrained(args.pretrained, out, overrides, shots=args.shots, progress=not args.quiet,
                                       allow_dirty=args.allow_dirty):
            print(f"{record['split']} {record['ways']}-way {record['shots']}-shot, no meta-training "
                  f"({out}): {100 * record['mean_accuracy']:.2f}% +- {100 * record['ci95']:.2f}% "
                  f"({record['episodes']} episodes, set {record['episode_set']})")
    except USER_ERRORS as error:
        return report_error("evaluate.py", error, args.debug)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
