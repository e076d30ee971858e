"""Small helpers used across subpackages."""
from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Union


def closest_name(name: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for error messages, or an empty string."""
    match = difflib.get_close_matches(str(name), list(choices), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def atomic_write(path: Union[str, Path], write: Callable[[str], None]) -> None:
    """Write ``path`` through a temporary file in the same directory and rename it into place,
    so a crash (or Ctrl-C) mid-write never leaves a truncated file where a good one was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def atomic_write_text(path: Union[str, Path], text: str) -> None:
    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    atomic_write(path, write)
