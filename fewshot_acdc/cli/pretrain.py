"""``python pretrain.py``: supervised pretraining of a backbone, the start of ``run_maml.py --init``.

Examples::

    python pretrain.py --config configs/omniglot_pretrain.yaml --backbone resnet18 --acdc net
    python pretrain.py --dataset builtin --backbone conv4 --pretrain-epochs 3 --out runs/pre
    python pretrain.py --resume runs/pretrain-omniglot-resnet18-net-seed0 --pretrain-epochs 30

The flags and YAML configs are run_maml.py's (one :class:`~fewshot_acdc.config.TrainConfig`);
the ``pretrain_*`` settings, ``momentum`` and ``lr_scaling`` steer this loop, ``ways``/``shots``/
``val_episodes`` its few-shot validation. Guide: README ("Pretrain, then meta-learn").
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

from .common import USER_ERRORS, report_error
from .train import build_parser, config_and_run_dir

PROG = "pretrain.py"


def default_run_dir(config) -> Path:
    return Path("runs") / f"pretrain-{config.dataset}-{config.backbone}-{config.conv_name}-seed{config.seed}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser(PROG, "Pretrain a (ACDC) backbone with a linear classifier over every training class.")
    args = parser.parse_args(argv)
    from ..runs.pretraining import pretrain
    config, run_dir = config_and_run_dir(parser, args, default_run_dir)
    if config.init is not None:
        parser.error("--init starts meta-training from a pretrained backbone (run_maml.py); pretrain.py starts from scratch")
    try:
        summary = pretrain(config, run_dir, resume=bool(args.resume), progress=not args.quiet,
                           allow_dirty=args.allow_dirty)
    except USER_ERRORS as error:
        return report_error(PROG, error, args.debug)
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: python pretrain.py --resume {run_dir}", file=sys.stderr)
        return 130
    print(f"finished {run_dir}: held-out accuracy {100 * summary['heldout_accuracy']:.2f}% "
          f"+- {100 * summary['heldout_ci95']:.2f}% on the training classes; best {summary['val_ways']}-way "
          f"{summary['val_shots']}-shot nearest-centroid validation accuracy {100 * summary['best_val_accuracy']:.2f}% "
          f"at epoch {summary['best_epoch']} (checkpoints/best.pt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
