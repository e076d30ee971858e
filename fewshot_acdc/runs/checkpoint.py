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
import zipfile
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
        # torch's message goes on to suggest weights_only=False: for a file that names code to
        # run, that is exactly what must not be done unless one wrote the file oneself.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        what = f" (it names {found.group(1)})" if found else ""
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain containers{what}, so it was not "
            "loaded: loading it could run code from the file. fewshot-acdc never writes such files; replace it "
            "with a copy from a source you trust") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        reason = str(error).split(". ")[0].strip().rstrip(".")  # torch's first sentence; the rest is advice
        raise CheckpointError(f"checkpoint {path} cannot be read (truncated, corrupt or not a checkpoint: "
                              f"{reason}); restore it from a copy, or delete it to start the run anew") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION or "model" not in state:
        raise CheckpointError(f"checkpoint {path} is not a fewshot-acdc checkpoint (version {CHECKPOINT_VERSION})")
    return state


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
