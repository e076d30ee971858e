"""Specification of the decoded-image cache."""

from __future__ import annotations

import numpy as np
import pytest

from fewshot_acdc.data.cache import cached_images, default_cache_dir, load_cached_images


def filler(value: int, calls: list):
    def fill(out: np.ndarray) -> None:
        calls.append(1)
        out[:] = value
    return fill


def test_built_once_then_memory_mapped_with_its_extra_record(cache_dir):
    calls: list = []
    args = dict(prefix="toy", fingerprint={"source": "a"}, count=3, shape=(2, 2, 1), cache_dir=cache_dir)
    first = cached_images(fill=filler(7, calls), extra={"labels": [0, 1, 1]}, **args)
    second = cached_images(fill=filler(9, calls), **args)
    assert calls == [1] and isinstance(second, np.memmap) and (second == 7).all()
    images, extra = load_cached_images(prefix="toy", fingerprint={"source": "a"}, cache_dir=cache_dir)
    assert extra == {"labels": [0, 1, 1]} and np.array_equal(images, first)
    other = cached_images(fill=filler(9, calls), **{**args, "fingerprint": {"source": "b"}})
    assert (other == 9).all() and len(calls) == 2


def test_a_failed_build_leaves_nothing_behind(cache_dir):
    def broken(out: np.ndarray) -> None:
        out[0] = 1
        raise RuntimeError("decoder failed")

    with pytest.raises(RuntimeError):
        cached_images(prefix="toy", fingerprint={}, count=2, shape=(1, 1, 1), fill=broken, cache_dir=cache_dir)
    assert list((cache_dir / "images").iterdir()) == []


def test_an_unwritable_cache_directory_falls_back_to_memory_with_a_warning(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="cannot write the image cache"):
        images = cached_images(prefix="toy", fingerprint={}, count=1, shape=(1, 1, 1),
                               fill=filler(5, []), cache_dir=blocker)
    assert images[0, 0, 0, 0] == 5


def test_default_cache_dir_honours_FEWSHOT_CACHE(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FEWSHOT_CACHE")
    assert default_cache_dir().name == "fewshot_acdc"
