"""Shared fixtures for the data tests: tiny datasets built on the fly, and the real-data root."""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fewshot_acdc.data.paths import data_root_from_env


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """A private cache directory, so tests never touch ~/.cache or each other."""
    return tmp_path / "cache"


@pytest.fixture
def real_data() -> Path:
    """$FEWSHOT_DATA as an absolute path, or skip the test when it is unset or missing.

    Absolute as the loaders read it (``data_root_from_env``): a relative setting such as the
    README's ``FEWSHOT_DATA=../shared/data`` would otherwise dangle once a test links to it
    from a temporary folder."""
    path = data_root_from_env()
    if path is None:
        pytest.skip("FEWSHOT_DATA is not set (real-data test; set it to the folder holding "
                    "omniglot/ and miniimagenet_split/)")
    if not path.is_dir():
        pytest.skip(f"FEWSHOT_DATA={os.environ['FEWSHOT_DATA']} is not a folder ({path})")
    return path


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (real-data test)")
    return path


def class_image(class_id: int, instance: int, size: int = 12) -> np.ndarray:
    """A tiny RGB image whose colour encodes the class and whose one bright pixel the instance,
    so a test can tell from pixels alone which image it received."""
    rng = np.random.default_rng(class_id)
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = rng.integers(0, 200, 3, dtype=np.uint8)
    image[instance % size, (instance // size) % size] = 255
    return image


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.squeeze()).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(array))


def glyph(seed: int, size: int = 105) -> np.ndarray:
    """An Omniglot-like drawing: mode-'1' semantics, white (True) paper with black strokes."""
    rng = np.random.default_rng(seed)
    paper = np.ones((size, size), dtype=bool)
    for _ in range(3):
        r, c = rng.integers(10, size - 10, 2)
        paper[r - 2:r + 3, max(c - 20, 0):c + 20] = False
    return paper


def glyph_png(seed: int, size: int = 105) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(glyph(seed, size)).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def write_omniglot_zip(path: Path, top: str, alphabets: dict[str, int], drawings: int = 4,
                       seed_offset: int = 0) -> None:
    """A zip like Lake's: <top>/<alphabet>/characterNN/<id>_NN.png."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{top}/", b"")
        for a, (alphabet, characters) in enumerate(sorted(alphabets.items())):
            for c in range(1, characters + 1):
                for d in range(1, drawings + 1):
                    seed = seed_offset + zlib.crc32(f"{alphabet}/{c}".encode()) % 10_000 * 100 + d
                    archive.writestr(f"{top}/{alphabet}/character{c:02d}/{a:02d}{c:02d}_{d:02d}.png",
                                     glyph_png(seed))
