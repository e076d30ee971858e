"""``python -m fewshot_acdc.analysis <command> --run RUN --out DIR`` (see ``--help``): the ACDC paper's
analyses of trained run directories (fewshot_acdc.analysis)."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from ..analysis.adaptation import run_adaptation
from ..analysis.atoms import run_atoms
from ..analysis.cam import run_cam
from ..analysis.coefficients import run_coefficients
from ..analysis.common import AnalysisError
from ..config import ConfigError
from ..data.errors import CorruptDataError, EpisodeSetMismatchError, ImpossibleEpisodeError
from ..runs.checkpoint import CheckpointError


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fewshot_acdc.analysis",
                                     description="The ACDC paper's analyses on trained run directories; each "
                                                 "command writes a figure and its numbers (CSV/JSON) to --out.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, many_runs: bool = False) -> argparse.ArgumentParser:
        # help is %-formatted by argparse, a description is not
        sub = commands.add_parser(name, help=help_text.replace("%", "%%"), description=help_text)
        sub.add_argument("--run", required=True, action="append" if many_runs else "store", metavar="RUN",
                         help="run directory" + (" (repeat for several runs in one figure)" if many_runs else ""))
        sub.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
        sub.add_argument("--checkpoint", default="best", help="checkpoint name in RUN/checkpoints (default: best)")
        sub.add_argument("--split", default="test", help="dataset split of the episodes (default: test)")
        sub.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
        sub.add_argument("--data-root", default=None, help="dataset root, if not the run's")
        sub.add_argument("--format", default="png", choices=("png", "svg"), help="figure format (default: png)")
        return sub

    atoms = command("atoms", "ACDC atoms at the meta-learned init and after adapting to one episode; "
                             "DCF/BasisConv fixed bases")
    atoms.add_argument("--episode", type=int, default=0, help="index in the saved episode set (default: 0)")
    atoms.add_argument("--steps", type=int, default=None, help="inner steps (default: the run's inner_steps_eval)")

    coefficients = command("coefficients", "coefficient spectra and cross-layer SVCCA (standard runs: 3x3 "
                                           "kernels decomposed into atoms and coefficients)")
    coefficients.add_argument("--atoms", type=int, default=None, help="atoms per decomposed layer (default k*k: exact)")
    coefficients.add_argument("--layers", nargs="+", default=None, help="3x3 layers to decompose (default: all)")
    coefficients.add_argument("--episodes", type=int, default=20,
                              help="episodes whose images are the SVCCA data points (default: 20)")

    cam = command("cam", "multi-layer class activation maps of query images, runs side by side", many_runs=True)
    cam.add_argument("--episode", type=int, default=0, help="index in the saved episode set (default: 0)")
    cam.add_argument("--images", type=int, default=4, help="query images to show (default: 4)")
    cam.add_argument("--steps", type=int, default=None, help="inner steps (default: each run's inner_steps_eval)")
    cam.add_argument("--layers", nargs="+", default=None, help="layers to map (default: every spatial conv)")

    adaptation = command("adaptation", "query accuracy and loss after each inner step, mean and 95% CI",
                         many_runs=True)
    adaptation.add_argument("--steps", type=int, default=None,
                            help="largest inner step (default: twice the largest inner_steps_eval)")
    adaptation.add_argument("--episodes", type=int, default=100, help="episodes of the saved set (default: 100)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    common = dict(checkpoint=args.checkpoint, split=args.split, device=args.device, data_root=args.data_root,
                  figure_format=args.format)
    try:
        if args.command == "atoms":
            paths = run_atoms(args.run, args.out, episode=args.episode, steps=args.steps, **common)
        elif args.command == "coefficients":
            paths = run_coefficients(args.run, args.out, atoms=args.atoms, layers=args.layers,
                                     episodes=args.episodes, **common)
        elif args.command == "cam":
            paths = run_cam(args.run, args.out, episode=args.episode, images=args.images, steps=args.steps,
                            layers=args.layers, **common)
        else:
            paths = run_adaptation(args.run, args.out, steps=args.steps, episodes=args.episodes, **common)
    except (AnalysisError, CheckpointError, ConfigError, FileNotFoundError, CorruptDataError, EpisodeSetMismatchError,
            ImpossibleEpisodeError) as error:
        if os.environ.get("FEWSHOT_DEBUG"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in paths.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
