"""Decoding one image file into the uint8 array the caches store."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import CorruptDataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def decode_image(
    source: bytes | str | Path,
    *,
    name: str,
    size: int,
    mode: str = "RGB",
    resample: int = Image.Resampling.LANCZOS,
    invert: bool = False,
) -> np.ndarray:
    """Decode, convert to ``mode`` ("RGB" or "L"), resize to size x size, return uint8 [H, W, C].

    The image is resized directly to a square (no crop), as Ravi & Larochelle's miniImageNet
    script does. ``invert`` maps v -> 255 - v (Omniglot: black-on-white strokes become white on
    black). ``name`` is what error messages call the file (a path or "archive.zip:member").
    """
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.load()  # force the full decode here so truncated files fail with their name
            image = image.convert(mode)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CorruptDataError(name, f"cannot decode image ({type(exc).__name__}: {exc})") from exc
    if image.size != (size, size):
        image = image.resize((size, size), resample=resample)
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    if invert:
        array = 255 - array
    return array
