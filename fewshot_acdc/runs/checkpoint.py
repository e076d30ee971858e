"""Checkpoints: written atomically, read back with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors and plain containers (model and optimizer state, RNG states,
iteration, best validation accuracy, and what training needs to resume exactly: the metrics
lines it covers, the log interval in progress, the config it was trained with), so loading it can
never run code from the file. A file that would is refused without torch's advice to load it with
``weights_only=False``, which is the one thing not to do with a file from elsewhere.
"""
from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from ..utils import atomic_write

CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated or not one of ours; the message names the file."""


def save_checkpoint(path: Union[str, Path], state: Dict[str, Any]) -> None:
    payload = {"version": CHECKPOINT_VERSION, **state}
    atomic_write(path, lambda temporary: torch.save(payload, temporary))


def copy_checkpoint(source: Union[str, Path], target: Union[str, Path]) -> None:
    """``target`` becomes a copy of ``source``, atomically (best.pt from last.pt: same state)."""
    atomic_write(target, lambda temporary: shutil.copyfile(source, temporary))


def load_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu",
                    mmap: bool = False) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if found is None:  # an opcode the weights-only unpickler does not know: bytes, not code
            raise CheckpointError(_corrupt(path, _unpickler_detail(error))) from None
        # torch's message goes on to suggest weights_only=False: for a file that names code to
        # run, that is exactly what must not be done unless one wrote the file oneself.
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain containers (it names "
            f"{found.group(1)}), so it was not loaded: loading it could run code from the file. fewshot-acdc never "
            "writes such files; replace it with a copy from a source you trust") from None
    except Exception as error:  # noqa: BLE001 - torch's unpickler raises what the garbage makes it raise
        # (KeyError for a text file, EOFError for an empty one, RuntimeError for a truncated zip, ...)
        raise CheckpointError(_corrupt(path, _detail(path, error))) from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION or "model" not in state:
        raise CheckpointError(f"checkpoint {path} is not a fewshot-acdc checkpoint (version {CHECKPOINT_VERSION})")
    return state


def _corrupt(path: Path, detail: str) -> str:
    return (f"checkpoint {path} is corrupt (truncated, damaged or not a checkpoint: {detail}); restore it from a "
            "copy, or delete it to start the run anew")


def _detail(path: Path, error: BaseException) -> str:
    """A non-empty reason: torch's first sentence (the rest is advice), else what the file is."""
    reason = str(error).split(". ")[0].strip().rstrip(".")
    if isinstance(error, KeyError) or not reason:
        try:
            size = path.stat().st_size
        except OSError:
            size = None
        if size == 0:
            return "an empty file (0 bytes)"
        reason = f"{type(error).__name__} reading {size} bytes" if size is not None else type(error).__name__
        if isinstance(error, KeyError):
            reason = f"not a torch checkpoint ({reason})"
    return reason


def _unpickler_detail(error: BaseException) -> str:
    found = re.search(r"WeightsUnpickler error: \s*(.+?)\s*(?:\n|$)", str(error))
    return f"unreadable data ({found.group(1).strip().rstrip('.')})" if found else "unreadable data"


def checkpoint_iteration(path: Union[str, Path]) -> Optional[int]:
    """The iteration a checkpoint holds, or None when it is missing or unreadable (tensors not read)."""
    try:
        return load_checkpoint(path, mmap=True)["iteration"]
    except CheckpointError:
        return None


def rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
