"""Specification of the restricted unpickler used for the miniImageNet pickle cache."""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from fewshot_acdc.data import CorruptDataError, UnsafePickleError, safe_load_pickle


def cache_dict() -> dict:
    return {"image_data": np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3),
            "class_dict": {"n01": [0], "n02": [1]}}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_containers_and_numpy_arrays_load_in_every_protocol(tmp_path: Path, protocol: int):
    data = {**cache_dict(), "floats": np.linspace(0, 1, 5), "nested": [(1, 2.5, "x", b"y", None, True)],
            "set": {1, 2}, "ordered": collections.OrderedDict(a=1), "scalar": np.float32(3.5)}
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = safe_load_pickle(path)
    assert np.array_equal(loaded["image_data"], data["image_data"])
    assert loaded["image_data"].dtype == np.uint8
    assert loaded["class_dict"] == data["class_dict"] and loaded["set"] == {1, 2}
    assert loaded["scalar"] == np.float32(3.5) and loaded["nested"] == data["nested"]


class RemovesAFile:
    """A payload that, unpickled with pickle.load, would delete the file at ``path``."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.remove, (self.path,))


def test_a_pickle_naming_another_global_is_refused_and_never_executed(tmp_path: Path):
    victim = tmp_path / "victim.txt"
    victim.write_text("still here")
    path = tmp_path / "mini-imagenet-cache-train.pkl"
    path.write_bytes(pickle.dumps({"image_data": RemovesAFile(str(victim)), "class_dict": {}}))
    with pytest.raises(UnsafePickleError) as error:
        safe_load_pickle(path)
    message = str(error.value)
    assert str(path) in message
    assert f"{os.remove.__module__}.remove" in message  # e.g. posix.remove
    assert victim.read_text() == "still here"
    assert isinstance(error.value, pickle.UnpicklingError)


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("subprocess", "Popen"),
                                          ("numpy", "load"), ("numpy.testing", "assert_equal")])
def test_dangerous_globals_even_inside_numpy_are_refused(tmp_path: Path, module: str, name: str):
    path = tmp_path / "bad.pkl"
    # Protocol-0 opcodes: GLOBAL module name, empty tuple, REDUCE, STOP.
    path.write_bytes(f"c{module}\n{name}\n(tR.".encode())
    with pytest.raises(UnsafePickleError, match=f"{module}.{name}"):
        safe_load_pickle(path)


def test_a_truncated_pickle_names_the_file(tmp_path: Path):
    path = tmp_path / "mini-imagenet-cache-test.pkl"
    path.write_bytes(pickle.dumps(cache_dict(), protocol=4)[:-40])
    with pytest.raises(CorruptDataError) as error:
        safe_load_pickle(path)
    assert str(path) in str(error.value) and "truncated" in str(error.value)
    assert isinstance(error.value, ValueError)


def test_a_file_that_is_not_a_pickle_names_the_file(tmp_path: Path):
    path = tmp_path / "junk.pkl"
    path.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(CorruptDataError, match="junk.pkl"):
        safe_load_pickle(path)
