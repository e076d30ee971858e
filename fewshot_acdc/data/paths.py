"""Where datasets are looked for.

``create_dataset(name, split, root=None)``: with no ``root``, the base folder is
``$FEWSHOT_DATA`` if set, else ``./data`` (relative to the working directory). A loader looks
for its layouts in the given folder itself and then in conventional sub-folders named after the
dataset (e.g. ``<base>/miniimagenet``, ``<base>/omniglot``), so both
``root=/data/miniimagenet`` and ``root=/data`` work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

DATA_ENV = "FEWSHOT_DATA"


def default_data_root() -> Path:
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else Path("data")


def candidate_roots(root: str | os.PathLike | None, aliases: Sequence[str]) -> list[Path]:
    """The folders a loader searches, in order: ``root`` (or the default base) then
    ``<that>/<alias>`` for each alias."""
    base = Path(root).expanduser() if root is not None else default_data_root()
    found: list[Path] = []
    for path in [base, *(base / alias for alias in aliases)]:
        if path not in found:
            found.append(path)
    return found


def describe_searched(paths: Sequence[Path]) -> str:
    shown = []
    for path in paths:
        state = "" if path.is_dir() else (" (missing)" if not path.exists() else " (not a folder)")
        shown.append(f"{path.resolve() if path.exists() else path}{state}")
    return ", ".join(shown)
