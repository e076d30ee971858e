"""Specification of single-image decoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fewshot_acdc.data import CorruptDataError
from fewshot_acdc.data.images import decode_image

from .conftest import class_image, png_bytes


def test_decodes_converts_and_resizes_to_a_square():
    wide = np.zeros((10, 20, 3), dtype=np.uint8)
    wide[:, :10] = 200
    out = decode_image(png_bytes(wide), name="x.png", size=8)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert out[:, :3].min() > 150 and out[:, -3:].max() < 50  # squashed, not cropped
    grey = decode_image(png_bytes(class_image(1, 0)), name="x.png", size=12, mode="L")
    assert grey.shape == (12, 12, 1)


def test_invert_maps_black_strokes_on_white_to_white_on_black():
    paper = np.full((6, 6), 255, dtype=np.uint8)
    paper[2, :] = 0
    out = decode_image(png_bytes(paper), name="x.png", size=6, mode="L", invert=True)
    assert out[2, :, 0].tolist() == [255] * 6 and out[0, 0, 0] == 0


def test_a_truncated_file_names_itself(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(class_image(3, 0, 32)).save(buffer, format="JPEG")
    path = tmp_path / "half.jpg"
    path.write_bytes(buffer.getvalue()[:100])
    with pytest.raises(CorruptDataError, match="half.jpg: cannot decode image"):
        decode_image(path, name=str(path), size=8)
    with pytest.raises(FileNotFoundError):
        decode_image(tmp_path / "absent.jpg", name="absent.jpg", size=8)
