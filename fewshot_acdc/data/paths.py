"""Where datasets are looked for.

``create_dataset(name, split, root=None)``: with no ``root``, the base folder is
``$FEWSHOT_DATA`` if set, else ``./data`` (relative to the working directory). A loader looks
for its layouts in the given folder itself and then in conventional sub-folders named after the
dataset (e.g. ``<base>/miniimagenet``, ``<base>/omniglot``), so both
``root=/data/miniimagenet`` and ``root=/data`` work.

The default base is made absolute where it is read (:func:`default_data_root`), against the
working directory of that moment: a relative ``FEWSHOT_DATA=../shared/data`` (as in the README)
then names one folder however the path travels on, into a symlink, a run's records or a
process started elsewhere, instead of being re-read relative to wherever it ends up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

DATA_ENV = "FEWSHOT_DATA"


def data_root_from_env() -> Path | None:
    """``$FEWSHOT_DATA`` as an absolute path (``~`` expanded, ``..`` folded), or None if unset."""
    env = os.environ.get(DATA_ENV)
    return Path(os.path.abspath(Path(env).expanduser())) if env else None


def default_data_root() -> Path:
    """Where datasets are looked for without a ``root``: ``$FEWSHOT_DATA``, else ``./data``;
    absolute either way."""
    return data_root_from_env() or Path(os.path.abspath("data"))


def candidate_roots(root: str | os.PathLike | None, aliases: Sequence[str]) -> list[Path]:
    """The folders a loader searches, in order: ``root`` (or the default base) then
    ``<that>/<alias>`` for each alias."""
    base = Path(root).expanduser() if root is not None else default_data_root()
    found: list[Path] = []
    for path in [base, *(base / alias for alias in aliases)]:
        if path not in found:
            found.append(path)
    return found


def how_to_look_elsewhere(root: str | os.PathLike | None) -> str:
    """The sentence a not-found error ends with: how to point the loaders at the data, and which
    of the two settings decided where they looked this time."""
    if root is not None:
        decided = "this time the folder was given explicitly (--data-root / root=)"
    elif os.environ.get(DATA_ENV):
        decided = f"this time ${DATA_ENV}={os.environ[DATA_ENV]} decided"
    else:
        decided = f"${DATA_ENV} is not set, so the default ./data ({os.path.abspath('data')}) was searched"
    return (f"To use data elsewhere, pass --data-root /path/to/data (root= in Python) or set "
            f"{DATA_ENV}=/path/to/data; {decided}.")


def describe_searched(paths: Sequence[Path]) -> str:
    shown = []
    for path in paths:
        state = "" if path.is_dir() else (" (missing)" if not path.exists() else " (not a folder)")
        shown.append(f"{path.resolve() if path.exists() else path}{state}")
    return ", ".join(shown)
