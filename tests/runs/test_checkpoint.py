"""Specification of fewshot_acdc.runs.checkpoint's reading: a file that is not a checkpoint of ours
is one CheckpointError line naming it, never a traceback of torch's unpickler, and only a file that
names code to run is called one that could run code."""
import random

import pytest
import torch

from fewshot_acdc.runs.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("content, detail", [
    (b"hello, this is a text file\n", "not a torch checkpoint"),  # a KeyError in torch's unpickler
    (b"model: resnet18\n", "unreadable data"),  # an UnpicklingError that names no global
    (random.Random(0).randbytes(4096), None),  # fixed: a first byte of "c" would name a global
    (b"", "an empty file (0 bytes)"),
])
def test_garbage_is_called_corrupt_with_a_non_empty_detail(tmp_path, content, detail):
    path = tmp_path / "last.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert message.startswith(f"checkpoint {path} is corrupt (") and "restore it from a copy" in message
    assert "could run code" not in message and "weights_only" not in message
    inner = message.split("not a checkpoint: ", 1)[1].split("); restore", 1)[0]
    assert inner.strip()
    if detail is not None:
        assert detail in inner


def test_a_truncated_checkpoint_is_corrupt(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.zeros(100)}, "iteration": 3})
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"last.pt is corrupt \(.+\); restore"):
        load_checkpoint(path)


def test_a_checkpoint_of_ours_loads(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "iteration": 3})
    state = load_checkpoint(path)
    assert state["iteration"] == 3 and torch.equal(state["model"]["w"], torch.ones(2))
