"""Small helpers used across subpackages."""
from __future__ import annotations

import difflib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

from .faults import fault_point

# Below this many free bytes on the disk a failed write is reported as a full disk: torch.save
# reports one as "[enforce fail at inline_container.cc] unexpected pos", with no errno to test.
_DISK_FULL_BYTES = 2**20


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp makes 0600 files; what is renamed into place gets the mode a plain open() would give.
_FILE_MODE = 0o666 & ~_current_umask()


def closest_name(name: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for error messages, or an empty string."""
    match = difflib.get_close_matches(str(name), list(choices), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


class PathError(OSError):
    """An ``OSError`` whose message names the path and says what to do; printed as it is."""

    def __init__(self, code: Optional[int], message: str, path: Union[str, Path]) -> None:
        super().__init__(code, message)
        self.filename = str(path)

    def __str__(self) -> str:
        return self.strerror


class WriteError(PathError):
    """A file could not be written (a full disk says so); what was written before is intact."""

    def __init__(self, path: Union[str, Path], error: BaseException, disk_full: bool = False) -> None:
        if disk_full:
            free = _free_bytes(Path(path).parent)
            amount = f"{free / 2**20:.1f} MiB" if free >= 2**20 else f"{max(free, 0) // 2**10} KiB"
            reason = (f"the disk is full ({amount} free on it); free some space (or write "
                      "elsewhere) and run again; the files written before are intact")
            code: Optional[int] = errno.ENOSPC
        else:
            reason = getattr(error, "strerror", None) or str(error)
            code = getattr(error, "errno", None)
        super().__init__(code, f"cannot write {path}: {reason}", path)


def _free_bytes(directory: Path) -> int:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return -1


def disk_full(directory: Union[str, Path], error: BaseException) -> bool:
    """Whether ``error``, raised while writing into ``directory``, came from a full disk."""
    if getattr(error, "errno", None) in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return True
    return 0 <= _free_bytes(Path(directory)) < _DISK_FULL_BYTES


def _fsync(path: Union[str, Path], directory: bool = False) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        if directory:  # some platforms cannot open a directory; the rename is then all there is
            return
        raise
    try:
        os.fsync(descriptor)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(descriptor)


def atomic_write(path: Union[str, Path], write: Callable[[str], None]) -> None:
    """Write ``path`` through a temporary file in the same directory and rename it into place,
    so a crash (or Ctrl-C) mid-write never leaves a truncated file where a good one was.

    The temporary file is flushed to disk before the rename, so after a power failure too the
    path holds the old or the new content. A failure to write raises :class:`WriteError`
    naming the path (and a full disk as such).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise WriteError(path, error, disk_full(path.parent, error)) from error
    os.close(descriptor)
    try:
        write(temporary)
        os.chmod(temporary, _FILE_MODE)
        _fsync(temporary)
        fault_point(f"write:{path.name}")  # written but not in place: the old file is what counts
        os.replace(temporary, path)
    except BaseException as error:
        # Judged before the temporary file is removed, which frees the space it took.
        full = isinstance(error, (OSError, RuntimeError)) and disk_full(path.parent, error)
        if os.path.exists(temporary):
            os.unlink(temporary)
        if full or (isinstance(error, OSError) and not isinstance(error, PathError)):
            raise WriteError(path, error, full) from error
        raise
    _fsync(path.parent, directory=True)


def atomic_write_text(path: Union[str, Path], text: str) -> None:
    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
    atomic_write(path, write)
