"""The run directory (layout and guarantees in docs/run_directory.md): paths, its lock, and the
metrics log that checkpoints commit together with the state."""
from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Union

from ..config import ConfigError, TrainConfig, canonical_values, config_from_values, load_saved_config, save_config
from ..utils import PathError, WriteError, atomic_write, atomic_write_text

try:
    import fcntl
except ImportError:  # Windows: a byte-range lock, which the system also drops when the process ends
    fcntl = None
    import msvcrt

LOCK_NAME = ".lock"
# Windows locks are mandatory: lock a byte past the holder's record, so a refused process can read it.
_WINDOWS_LOCK_OFFSET = 2**20


class RunLockedError(RuntimeError):
    """Another live process holds the run directory; the message names it."""


class MetricsFileError(ValueError):
    """A metrics.jsonl line that is not a JSON object; the message names the file and line."""


class RunDirectory:
    def __init__(self, root: Union[str, Path]) -> None:
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, name: str) -> Path:
        return self.checkpoints / f"{name}.pt"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_NAME

    def eval_file(self, split: str, ways: int, shots: int) -> Path:
        return self.eval_dir / f"{split}_{ways}way_{shots}shot.json"

    def create(self) -> "RunDirectory":
        for folder in (self.root, self.checkpoints):
            if folder.exists() and not folder.is_dir():
                raise PathError(errno.ENOTDIR, f"{folder} is a file, not a run directory; choose another --out "
                                               "(or move the file away)", folder)
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise PathError(error.errno, f"cannot create the run directory {folder}: {error.strerror}; "
                                             "choose another --out", folder) from None
        return self

    @contextmanager
    def lock(self, notify: Optional[Callable[[str], None]] = None) -> Iterator[None]:
        """Hold the directory for one training process (creating it).

        ``flock`` on ``.lock``: the OS releases it when the process ends, however it ends, so a
        lock left by a killed run is free and is taken over (``notify`` is told whose it was);
        the pid in the file only names the holder in the error a second process gets.
        """
        self.create()
        try:
            descriptor = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise WriteError(self.lock_file, error) from None
        try:
            if not _try_lock(descriptor):
                raise RunLockedError(
                    f"{self.root} is in use by {_describe_holder(_read_lock(descriptor))}: two runs writing one "
                    "directory would interleave their metrics and checkpoints. Wait for it to finish or stop it "
                    "(it resumes with --resume), or choose another --out") from None
            previous = _read_lock(descriptor)
            holder = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
            os.ftruncate(descriptor, 0)
            os.lseek(descriptor, 0, os.SEEK_SET)
            os.write(descriptor, (json.dumps(holder) + "\n").encode("utf-8"))
            if previous and notify is not None:
                # Emptied on every orderly exit, so a holder still named means that process died.
                notify(f"took over {self.lock_file} from {_describe_holder(previous)}, which is no longer running")
            try:
                yield
            finally:
                os.ftruncate(descriptor, 0)
        finally:
            os.close(descriptor)  # releases the lock

    def remove_temporaries(self) -> List[Path]:
        """Delete the temporary files of atomic writes that a killed process left (``.<name>.*.tmp``).

        Only while holding the lock: no other writer of this directory is then alive. (``eval/``
        is left alone: evaluation may run next to training.)
        """
        removed = []
        for folder in (self.root, self.checkpoints):
            for path in folder.glob(".*.tmp") if folder.is_dir() else ():
                if path.is_file():
                    path.unlink()
                    removed.append(path)
        return removed

    def read_metrics(self) -> List[Dict[str, Any]]:
        if not self.metrics.exists():
            return []
        return parse_metrics(self.metrics, self.metrics.read_text(encoding="utf-8", errors="replace"))

    def write_config(self, config: TrainConfig) -> None:
        atomic_write(self.config, lambda temporary: save_config(config, temporary))

    def write_json(self, path: Path, payload: Dict[str, Any]) -> None:
        atomic_write_text(path, json.dumps(payload, indent=2) + "\n")

    def iter_eval_files(self) -> Iterator[Path]:
        return iter(sorted(self.eval_dir.glob("*.json"))) if self.eval_dir.exists() else iter(())


class ConfigRecord:
    """``config.yaml`` as a training loop writes it (meta-training and pretraining alike).

    A new run writes it at once: it is what makes the directory a run that ``--resume`` can
    continue, and a run is a function of its config. A resumed run writes it only when it commits
    its first checkpoint (just before, so a kill in between leaves the new values in config.yaml
    and the resume then makes the same change again): a resume whose changes fail (``--meta-lr
    1e4`` stopping on an exploding loss) leaves config.yaml as the checkpoint's run had it, so a
    bare ``--resume`` continues that run instead of failing the same way.
    """

    def __init__(self, run: RunDirectory, config: TrainConfig, *, resumed: bool, writable: bool = True) -> None:
        self.run, self.config, self.writable = run, config, writable
        self.pending = writable
        if not resumed:
            self.before_commit()

    def before_commit(self) -> None:
        """Write config.yaml if it does not hold ``config`` yet (call before saving a checkpoint)."""
        if self.pending:
            self.run.write_config(self.config)
            self.pending = False


def parse_metrics(path: Path, text: str) -> List[Dict[str, Any]]:
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            records.append(_parse_line(path, number, line))
    return records


def _parse_line(path: Path, number: int, line: str) -> Dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise MetricsFileError(f"{path} line {number} is not valid JSON ({error})") from None
    if not isinstance(record, dict):
        raise MetricsFileError(f"{path} line {number} is not a JSON object")
    return record


class MetricsLog:
    """``metrics.jsonl`` as training writes it.

    The lines live in memory and every checkpoint carries all of them (:meth:`text`), so the
    checkpoint is the record of what the file must hold up to its iteration: lines logged after
    it are dropped on resume (the resumed run logs them again, identically), and lines it covers
    that the file lost, tore or garbled are written back from it (:meth:`restore`).

    ``writable=False`` keeps the lines and never touches the file: what the ranks other than 0
    of a data-parallel run hold (rank 0 alone writes the run directory).
    """

    def __init__(self, path: Path, writable: bool = True, mirror=None) -> None:
        self.path = path
        self.writable = writable
        self.mirror = mirror  # e.g. a runs.tensorboard.TensorBoardLog: gets each line as it is written
        self.lines: List[str] = []
        self.written = 0  # how many of self.lines the file holds

    def add(self, record: Dict[str, Any]) -> None:
        self.lines.append(json.dumps(record))

    def flush(self) -> None:
        """Append the lines not yet in the file."""
        if self.written == len(self.lines) or not self.writable:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write("".join(line + "\n" for line in self.lines[self.written:]))
        except OSError as error:
            raise WriteError(self.path, error, error.errno == errno.ENOSPC) from error
        if self.mirror is not None:
            self.mirror.write(json.loads(line) for line in self.lines[self.written:])
        self.written = len(self.lines)

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)

    def records(self) -> List[Dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    def reset(self) -> List[str]:
        """A run starting at iteration 0: whatever an earlier attempt logged goes. Returns notes."""
        notes = []
        if not self.writable:
            self.lines, self.written = [], 0
            return notes
        if self.path.exists():
            if self.path.read_bytes().strip():
                notes.append(f"{self.path}: discarded the lines of an earlier attempt that reached no checkpoint")
            self.path.unlink()
        self.lines, self.written = [], 0
        return notes

    def restore(self, text: Optional[str], iteration: int, source: Path) -> List[str]:
        """Make the file hold exactly the lines that the checkpoint ``source`` (at ``iteration``)
        covers, its ``text``; returns notes on what had to be changed.

        ``text`` is None for checkpoints from before they carried their lines: the file's lines up
        to ``iteration`` are kept then (and an unreadable one is an error naming it).
        """
        if not self.writable and text is not None:
            self.lines = text.splitlines()
            self.written = len(self.lines)
            return []
        on_disk = self.path.read_text(encoding="utf-8", errors="replace") if self.path.exists() else ""
        if text is None:
            kept = [record for record in parse_metrics(self.path, on_disk) if record.get("iteration", 0) <= iteration]
            text = "".join(json.dumps(record) + "\n" for record in kept)
        self.lines = text.splitlines()
        self.written = len(self.lines)
        if on_disk == text:
            return []
        notes = []
        disk_lines = on_disk.splitlines()
        for number, line in enumerate(disk_lines[:len(self.lines)], 1):
            if line != self.lines[number - 1]:
                try:
                    _parse_line(self.path, number, line)
                    problem = f"{self.path} line {number} differs from what {source} records"
                except MetricsFileError as error:
                    problem = str(error)
                notes.append(f"{problem}; rewrote the lines up to iteration {iteration} from {source}")
                break
        if len(disk_lines) > len(self.lines):
            notes.append(f"{self.path}: dropped {len(disk_lines) - len(self.lines)} line(s) logged after the checkpoint "
                         f"at iteration {iteration}; the resumed run logs them again")
        elif len(disk_lines) < len(self.lines):
            notes.append(f"{self.path}: restored {len(self.lines) - len(disk_lines)} line(s) up to iteration "
                         f"{iteration} from {source}")
        if self.writable:
            atomic_write_text(self.path, text)
        return notes


def _try_lock(descriptor: int) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    os.lseek(descriptor, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
    try:
        msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _read_lock(descriptor: int) -> Optional[Dict[str, Any]]:
    os.lseek(descriptor, 0, os.SEEK_SET)
    content = os.read(descriptor, 4096).decode("utf-8", errors="replace").strip()
    if not content:
        return None
    try:
        holder = json.loads(content)
    except json.JSONDecodeError:
        return {"pid": content}
    return holder if isinstance(holder, dict) else {"pid": content}


def _describe_holder(holder: Optional[Dict[str, Any]]) -> str:
    if not holder:
        return "another process"
    where = f" on {holder['host']}" if holder.get("host") else ""
    since = f", started {holder['started']}" if holder.get("started") else ""
    command = f": {holder['command']}" if holder.get("command") else ""
    return f"process {holder.get('pid', '?')}{where}{since}{command}"


def resume_config(run_dir: Union[str, Path], overrides: Optional[Dict[str, object]] = None,
                  notify: Optional[Callable[[str], None]] = None) -> TrainConfig:
    """The config a resumed (or evaluated) run continues with: its saved config.yaml plus
    explicit overrides (e.g. more ``iterations``).

    A config.yaml that is missing or cannot be read (corrupt, truncated, hand-edited into an
    invalid value) is not the end of the run: ``checkpoints/last.pt`` carries the config it was
    trained with, which is then used (``notify`` is told; the next checkpoint's commit writes
    config.yaml again). Without a readable checkpoint the ConfigError says how to repair it."""
    run = RunDirectory(run_dir)
    try:
        return load_saved_config(run.config, overrides)
    except ConfigError as error:
        if run.config.is_file():
            try:
                load_saved_config(run.config)
            except ConfigError:
                pass  # the file itself is the problem: fall back to the checkpoint below
            else:
                raise  # the overrides are the problem
        problem = str(error)
    saved = _checkpoint_config(run)
    if saved is None:
        raise ConfigError(
            f"{problem}; and {run.checkpoint('last')} holds no readable config to fall back on. Repair config.yaml "
            f"(restore it from a copy, or write the run's settings back into it), or start a new run with another "
            f"--out") from None
    if notify is not None:
        notify(f"{problem}; using the config recorded in {run.checkpoint('last')} instead (config.yaml is "
               "written again at the next checkpoint)")
    return config_from_values(saved, overrides, f"the config in {run.checkpoint('last')}")


def _checkpoint_config(run: RunDirectory) -> Optional[Dict[str, Any]]:
    """The config mapping that ``checkpoints/last.pt`` recorded, or None (no file, unreadable, none)."""
    if not run.checkpoint("last").is_file():
        return None
    from .checkpoint import CheckpointError, load_checkpoint
    try:
        saved = load_checkpoint(run.checkpoint("last"), mmap=True).get("config")
    except CheckpointError:
        return None
    return canonical_values(saved) if isinstance(saved, dict) and saved else None
