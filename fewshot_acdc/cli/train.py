"""``python run_maml.py``: meta-train a backbone with MAML.

Examples::

    python run_maml.py --config configs/quick_builtin.yaml             # built-in data, minutes on a CPU
    python run_maml.py --backbone resnet18 --acdc net                  # miniImageNet under data/miniimagenet
    python run_maml.py --config configs/closer_look_maml.yaml --backbone resnet34 --acdc net --shots 5
    python run_maml.py --resume runs/resnet18-net-all-5w1s-seed0 --iterations 80000
    python run_maml.py --dataset builtin --backbone conv4 --conv basis --rank 16 --adapt combination
    torchrun --standalone --nproc_per_node 4 run_maml.py --backbone resnet18 --acdc net   # data-parallel

A YAML config is the base, flags override it, and the result is resolved once into one typed
:class:`~fewshot_acdc.config.TrainConfig` saved as ``config.yaml`` in the run directory.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from ..config import (ACDC_KINDS, ADAPT_SCOPES, BACKBONES, CONV_KINDS, DATASETS, DEVICES, TASK_BATCHING, ConfigError,
                      load_config)
from ..vocabulary import (BATCHNORM_CHOICES, HEAD_INITS, LEARNED_STEP_SIZES, LR_SCALINGS, META_LR_SCHEDULES,
                          OMNIGLOT_BACKGROUNDS, OPTIMIZERS, ROLES)
from ..vocabulary import DISTRIBUTED_TIMEOUT_SECONDS as DEFAULT_TIMEOUT_SECONDS
from .common import USER_ERRORS, ArgumentParser, add_allow_dirty_flag, add_debug_flag, add_size_flags, report_error


def parse_inner_lr(text: str):
    """``0.01`` -> 0.01; ``atoms=1e-4,head=0.1`` -> {"atoms": 1e-4, "head": 0.1} (roles checked by the config)."""
    import argparse
    try:
        if "=" not in text:
            return float(text)
        pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
        return {role.strip(): float(value) for role, value in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a number nor ROLE=LR pairs separated by commas (e.g. atoms=1e-4,head=0.1)") from None

# flag destination -> config key, for every flag that overrides a config value
FLAG_KEYS = (
    "backbone", "acdc", "conv", "atoms", "rank", "bessel_atoms", "base_width", "group_size", "atom_drop", "adapt", "ways", "shots", "queries", "queries_eval",
    "inner_steps", "inner_steps_eval", "inner_lr", "learn_inner_lr", "multi_step_anneal", "batchnorm", "head_init", "meta_lr",
    "meta_lr_schedule", "meta_lr_min", "meta_optimizer", "weight_decay", "momentum", "lr_scaling", "init",
    "meta_batch", "first_order", "recompute_inner_steps", "grad_clip",
    "pretrain_optimizer", "pretrain_lr", "pretrain_weight_decay", "pretrain_schedule", "pretrain_epochs",
    "pretrain_batch", "pretrain_holdout",
    "task_batching", "iterations", "plateau_validations", "image_size", "augment", "dataset", "data_root", "omniglot_background",
    "num_workers", "episode_dir",
    "log_every", "val_every", "val_episodes", "test_episodes", "eval_batch", "device", "threads", "seed",
    "tensorboard",
)


def build_parser(prog: str = "run_maml.py", description: str = "Meta-train a (ACDC) backbone with MAML.") -> ArgumentParser:
    """The flags of both entry points (run_maml.py, pretrain.py): one config, one set of flags."""
    parser = ArgumentParser(prog=prog, description=description)
    model = parser.add_argument_group("model")
    model.add_argument("--backbone", choices=BACKBONES)
    model.add_argument("--acdc", choices=ACDC_KINDS, help="coefficient sharing scope; none = standard convolutions")
    model.add_argument("--conv", choices=CONV_KINDS,
                       help="conv kind (instead of --acdc): standard, acdc-*, basis (BasisConv), dcf (fixed "
                            "Fourier-Bessel atoms), repeat-net/-block/-layer (learnable repetition)")
    add_size_flags(model)
    model.add_argument("--group-size", type=int, help="channels per group (s), for g-net/g-block/g-layer")
    model.add_argument("--atom-drop", type=float, help="atom-drop probability p in [0, 1)")
    maml = parser.add_argument_group("MAML")
    maml.add_argument("--adapt", choices=ADAPT_SCOPES, help="parameters adapted in the inner loop")
    maml.add_argument("--inner-steps", type=int)
    maml.add_argument("--inner-steps-eval", type=int)
    maml.add_argument("--inner-lr", type=parse_inner_lr, metavar="LR|ROLE=LR,...",
                      help="inner-loop step size: one number for every parameter, or per role, e.g. "
                           "atoms=1e-4,head=0.1,default=0.01 (roles: " + ", ".join(ROLES) + ")")
    maml.add_argument("--learn-inner-lr", choices=LEARNED_STEP_SIZES,
                      help="meta-learn the step sizes: lslr (per tensor and step, MAML++), meta-sgd (per element)")
    maml.add_argument("--multi-step-anneal", type=int, metavar="ITERATIONS",
                      help="MAML++ multi-step loss, annealed to the last inner step over ITERATIONS")
    maml.add_argument("--batchnorm", choices=BATCHNORM_CHOICES,
                      help="transductive (batch statistics everywhere) or per-step (MAML++: BN weights and running "
                           "statistics per inner step, used at test time)")
    maml.add_argument("--head-init", choices=HEAD_INITS,
                      help="per-class (MAML's learned row per class) or shared (UNICORN-MAML: one learned row "
                           "copied to every class when a task starts)")
    maml.add_argument("--meta-lr", type=float)
    maml.add_argument("--meta-lr-schedule", choices=META_LR_SCHEDULES)
    maml.add_argument("--meta-lr-min", type=float, help="cosine schedule's final meta learning rate")
    maml.add_argument("--meta-optimizer", choices=OPTIMIZERS, help="outer-loop optimiser (sgd: Nesterov momentum)")
    maml.add_argument("--weight-decay", type=float, help="outer optimiser's weight decay (AdamW: decoupled)")
    maml.add_argument("--momentum", type=float, help="SGD's Nesterov momentum (outer loop and pretraining)")
    maml.add_argument("--lr-scaling", choices=LR_SCALINGS,
                      help="kernel: under Adam/AdamW, ACDC coefficients learn at the rate of the kernel they "
                           "compose (x gamma; fewshot_acdc.nn.scaling); SGD and the inner loop keep their rates")
    maml.add_argument("--init", metavar="PRETRAIN_RUN",
                      help="start from a pretraining run directory (its best.pt) or checkpoint (pretrain.py); "
                           "the N-way head starts at zero")
    maml.add_argument("--meta-batch", type=int, help="tasks per meta-step")
    maml.add_argument("--first-order", action="store_const", const=True, help="first-order MAML")
    maml.add_argument("--recompute-inner-steps", action="store_const", const=True,
                      help="second order in bounded memory: recompute each inner step in the backward pass "
                           "instead of keeping its graph (same meta-gradient; more time, far less memory at "
                           "large images or many inner steps)")
    maml.add_argument("--grad-clip", type=float, help="clip the meta-gradient's global norm")
    maml.add_argument("--task-batching", choices=TASK_BATCHING)
    maml.add_argument("--iterations", type=int, help="meta-steps (with --plateau-validations: the most)")
    maml.add_argument("--plateau-validations", type=int, metavar="N",
                      help="stop once none of the last N validations beats the best earlier one by more than its 95%% CI")
    pretraining = parser.add_argument_group("supervised pretraining (pretrain.py)")
    pretraining.add_argument("--pretrain-optimizer", choices=OPTIMIZERS)
    pretraining.add_argument("--pretrain-lr", type=float)
    pretraining.add_argument("--pretrain-weight-decay", type=float)
    pretraining.add_argument("--pretrain-schedule", choices=META_LR_SCHEDULES)
    pretraining.add_argument("--pretrain-epochs", type=int)
    pretraining.add_argument("--pretrain-batch", type=int, help="images per batch")
    pretraining.add_argument("--pretrain-holdout", type=int, help="images of each training class held out")
    episodes = parser.add_argument_group("episodes and data")
    episodes.add_argument("--ways", type=int)
    episodes.add_argument("--shots", type=int)
    episodes.add_argument("--queries", type=int, help="queries per class in meta-training")
    episodes.add_argument("--queries-eval", type=int, help="queries per class in validation/test")
    episodes.add_argument("--dataset", choices=DATASETS)
    episodes.add_argument("--data-root")
    episodes.add_argument("--image-size", type=int)
    episodes.add_argument("--omniglot-background", choices=OMNIGLOT_BACKGROUNDS,
                          help="Omniglot: every background set found (all), or one of Lake's minimal sets alone "
                               "(its test is the all_runs benchmark)")
    episodes.add_argument("--augment", action="store_const", const=True, help="training-time augmentation")
    episodes.add_argument("--num-workers", type=int)
    episodes.add_argument("--episode-dir", help="where fixed validation/test episode sets are saved")
    run = parser.add_argument_group("run")
    run.add_argument("--config", help="YAML base config (flags override it)")
    run.add_argument("--out", help="run directory (default runs/<dataset>-<backbone>-<acdc or conv>-<adapt>-<ways>w<shots>s-seed<seed>)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from checkpoints/last.pt")
    run.add_argument("--device", choices=DEVICES)
    run.add_argument("--seed", type=int)
    run.add_argument("--threads", type=int, help="CPU threads for torch (default: one per core)")
    run.add_argument("--log-every", type=int)
    run.add_argument("--val-every", type=int)
    run.add_argument("--val-episodes", type=int)
    run.add_argument("--test-episodes", type=int)
    run.add_argument("--eval-batch", type=int, metavar="EPISODES",
                     help="validation/test episodes adapted together with torch.func.vmap (1: one at a time; "
                          "default: 1 on a CPU, a memory-bounded stack on a GPU)")
    run.add_argument("--no-eval", action="store_true", help="skip the test evaluation after training")
    run.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS, metavar="SECONDS",
                     help="under torchrun: how long a rank waits for the others at a collective before the job "
                          f"fails (default {DEFAULT_TIMEOUT_SECONDS:g}; a rank that dies ends the job at once)")
    run.add_argument("--quiet", action="store_true", help="no progress bar (logs, CI)")
    run.add_argument("--tensorboard", action="store_const", const=True,
                     help="also log the metrics to RUN_DIR/tensorboard (needs the tensorboard package)")
    add_allow_dirty_flag(run)
    add_debug_flag(run)
    return parser


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)


def resumed_config(parser: ArgumentParser, args, overrides: Dict[str, Any]):
    """``--resume RUN_DIR``'s config: config.yaml with the flags on top, or, when config.yaml is
    missing or unreadable, the config its ``checkpoints/last.pt`` recorded (a note says so); a
    ConfigError says how to repair a run that has neither."""
    from ..runs.directory import resume_config
    if args.config:
        parser.error("--resume continues a run with its saved config.yaml; --config cannot change it")
    if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        parser.error("--resume continues a run in its own directory; --out cannot move it")
    run_dir = Path(args.resume)
    if not (run_dir / "config.yaml").is_file() and not (run_dir / "checkpoints" / "last.pt").is_file():
        parser.error(f"--resume {run_dir}: no config.yaml there, so it is not a run directory")
    return resume_config(run_dir, overrides, notify=note), run_dir


def default_run_dir(config) -> Path:
    return Path("runs") / f"{config.dataset}-{config.backbone}-{config.conv_name}-{config.adapt}-{config.ways}w{config.shots}s-seed{config.seed}"


def config_and_run_dir(parser: ArgumentParser, args, default_dir) -> Tuple[Any, Path]:
    """The one config of a run_maml.py or pretrain.py invocation and its run directory: the saved
    config with the flags on top for ``--resume``, else ``--config`` with the flags on top, in
    ``--out`` or ``default_dir(config)``. A bad value ends the command with the parser's usage
    error. Sets torch's threads (process-wide, hence here and not in the training loops)."""
    overrides: Dict[str, Any] = {key: getattr(args, key) for key in FLAG_KEYS if getattr(args, key) is not None}
    try:
        if args.resume:
            config, run_dir = resumed_config(parser, args, overrides)
        else:
            config = load_config(args.config, overrides)
            run_dir = Path(args.out) if args.out else default_dir(config)
    except ConfigError as error:
        parser.error(str(error))
    if config.threads is not None:
        import torch
        torch.set_num_threads(config.threads)
    return config, run_dir


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..runs.training import train
    from ..runs.evaluation import evaluate_omniglot_all_runs, evaluate_run
    config, run_dir = config_and_run_dir(parser, args, default_run_dir)
    from ..runs import distributed
    prog = "run_maml.py"
    group = distributed.SINGLE_PROCESS
    try:
        # torchrun's processes (RANK, WORLD_SIZE... set): join the group; a single process: nothing.
        group = distributed.start(config.device, meta_batch=config.meta_batch, timeout_seconds=args.dist_timeout)
        if group.is_distributed:
            prog = f"run_maml.py (rank {group.rank} of {group.world_size})"
        say = print if group.is_main else (lambda *arguments, **keywords: None)
        summary = train(config, run_dir, resume=bool(args.resume), progress=not args.quiet, distributed=group,
                        allow_dirty=args.allow_dirty)
        say(f"finished {run_dir}: best validation accuracy {100 * summary['best_val_accuracy']:.2f}% "
            f"at iteration {summary['best_iteration']}")
        if not args.no_eval and config.dataset == "omniglot" and config.omniglot_background != "all":
            # Lake's minimal setting has no test split: its test is the one-shot benchmark.
            record = evaluate_omniglot_all_runs(run_dir, device=config.device, distributed=group,
                                                allow_dirty=args.allow_dirty)
            say(f"omniglot all_runs (20-way within-alphabet one-shot, background {config.omniglot_background}): "
                f"error rate {100 * record['error_rate']:.2f}%")
        elif not args.no_eval:
            for record in evaluate_run(run_dir, device=config.device, progress=not args.quiet, distributed=group,
                                       allow_dirty=args.allow_dirty):
                say(f"test {record['ways']}-way {record['shots']}-shot: {100 * record['mean_accuracy']:.2f}% "
                    f"+- {100 * record['ci95']:.2f}% ({record['episodes']} episodes)")
    except USER_ERRORS as error:  # TrainingStopped, RunLockedError, CheckpointError, data and output errors
        return report_error(prog, error, args.debug)
    except KeyboardInterrupt:
        if group.is_main:
            print(f"\ninterrupted; continue with: python run_maml.py --resume {run_dir}", file=sys.stderr)
        return 130
    finally:
        distributed.stop(group)
    return 0


if __name__ == "__main__":
    sys.exit(main())
