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

from ..config import ACDC_KINDS, FLAGGED_KEYS, ConfigError, load_config
from ..config import parse_inner_lr  # noqa: F401  (re-exported: evaluate.py, benchmarks and experiments use it)
from ..vocabulary import DISTRIBUTED_TIMEOUT_SECONDS as DEFAULT_TIMEOUT_SECONDS
from .common import USER_ERRORS, ArgumentParser, add_allow_dirty_flag, add_debug_flag, add_setting_flags, report_error

# flag destination -> config key, for every flag that overrides a config value: each setting's own
# flag (declared on its TrainConfig field: fewshot_acdc.config.setting) and the --acdc alias of conv.
FLAG_KEYS = ("acdc",) + FLAGGED_KEYS

# The titles of the flag groups (fewshot_acdc.config.FLAG_GROUPS, in that order) in --help.
GROUP_TITLES = {"model": "model", "MAML": "MAML", "pretraining": "supervised pretraining (pretrain.py)",
                "episodes": "episodes and data", "run": "run"}


def build_parser(prog: str = "run_maml.py", description: str = "Meta-train a (ACDC) backbone with MAML.") -> ArgumentParser:
    """The flags of both entry points (run_maml.py, pretrain.py): one config, one set of flags.

    Each config setting's flag comes from its field's declaration (fewshot_acdc.config.setting);
    only the flags that are not a setting (the --acdc alias, --config, --out, --resume...) are
    written here."""
    parser = ArgumentParser(prog=prog, description=description)
    groups = {name: parser.add_argument_group(title) for name, title in GROUP_TITLES.items()}
    groups["model"].add_argument("--acdc", choices=ACDC_KINDS, help="coefficient sharing scope; none = standard convolutions")
    run = groups["run"]
    run.add_argument("--config", help="YAML base config (flags override it)")
    run.add_argument("--out", help="run directory (default runs/<dataset>-<backbone>-<acdc or conv>-<adapt>-<ways>w<shots>s-seed<seed>)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from checkpoints/last.pt")
    for name, group in groups.items():
        add_setting_flags(group, name)
    run.add_argument("--no-eval", action="store_true", help="skip the test evaluation after training")
    run.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS, metavar="SECONDS",
                     help="under torchrun: how long a rank waits for the others at a collective before the job "
                          f"fails (default {DEFAULT_TIMEOUT_SECONDS:g}; a rank that dies ends the job at once)")
    run.add_argument("--quiet", action="store_true", help="no progress bar (logs, CI)")
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
