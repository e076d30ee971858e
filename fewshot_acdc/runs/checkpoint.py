"""Checkpoints: written atomically, read back with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors and plain containers (model and optimizer state, RNG states,
iteration, best validation accuracy), so loading it can never run code from the file.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Union

import torch

from ..utils import atomic_write

CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated or not one of ours; the message names the file."""


def save_checkpoint(path: Union[str, Path], state: Dict[str, Any]) -> None:
    payload = {"version": CHECKPOINT_VERSION, **state}
    atomic_write(path, lambda temporary: torch.save(payload, temporary))


def load_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, OSError) as error:
        raise CheckpointError(f"checkpoint {path} cannot be read (truncated, corrupt or not a checkpoint): {error}") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION or "model" not in state:
        raise CheckpointError(f"checkpoint {path} is not a fewshot-acdc checkpoint (version {CHECKPOINT_VERSION})")
    return state


def rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
