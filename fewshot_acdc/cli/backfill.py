"""``python -m fewshot_acdc.cli.backfill PATH...``: add per-episode identities to eval files
written before they were recorded, without re-scoring (fewshot_acdc.runs.evaluation.
backfill_episode_identities). PATH: eval files, or folders searched for ``eval/*.json`` and
``eval/protocols/*.json``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Sequence

from .common import USER_ERRORS, ArgumentParser, add_debug_flag, report_error

PROG = "python -m fewshot_acdc.cli.backfill"


def eval_files(paths: Sequence[str]) -> List[Path]:
    found: List[Path] = []
    for given in map(Path, paths):
        if given.is_file():
            found.append(given)
        else:
            found += sorted(p for p in given.rglob("*.json") if p.parent.name == "eval"
                            or (p.parent.name == "protocols" and p.parent.parent.name == "eval"))
    return [p for p in found if p.name != "omniglot-all-runs.json"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = ArgumentParser(prog=PROG, description="Add per-episode identities to eval files that lack them, "
                                                   "from the saved episode sets they name (nothing is re-scored).")
    parser.add_argument("paths", nargs="+", metavar="PATH")
    parser.add_argument("--data-root", help="where the data the files were scored on is (default: each run's)")
    parser.add_argument("--episode-dir", help="where the fixed episode sets are saved (default: each run's)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    from ..runs.evaluation import backfill_episode_identities
    failed = 0
    for path in eval_files(args.paths):
        try:
            outcome = backfill_episode_identities(path, data_root=args.data_root, episode_dir=args.episode_dir)
        except USER_ERRORS as error:
            failed += 1
            report_error(PROG, error, args.debug)
            continue
        print(f"{path}: {outcome}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
