"""Specification of normalization and the Closer-Look-style training augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance

from fewshot_acdc.data import transforms as T


def uint8_batch(n: int = 6, size: int = 16, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def test_without_augmentation_images_are_exactly_normalized_nchw_float32():
    images = uint8_batch()
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    out = T.to_model_input(images, mean, std)
    expected = (torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) \
        / torch.tensor(std).view(1, 3, 1, 1)
    assert out.dtype == torch.float32 and out.shape == (6, 3, 16, 16) and out.is_contiguous()
    torch.testing.assert_close(out, expected.float(), atol=1e-5, rtol=1e-5)


def test_mean_and_std_must_match_the_channels():
    with pytest.raises(ValueError):
        T.to_model_input(uint8_batch(channels=1), (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))


def test_augmentation_needs_an_explicit_generator_and_is_reproducible_with_it():
    images = uint8_batch()
    with pytest.raises(ValueError, match="Generator"):
        T.to_model_input(images, (0.5,) * 3, (0.5,) * 3, augment=True)
    before = torch.get_rng_state().clone()
    a = T.to_model_input(images, (0.5,) * 3, (0.5,) * 3, True, torch.Generator().manual_seed(3))
    b = T.to_model_input(images, (0.5,) * 3, (0.5,) * 3, True, torch.Generator().manual_seed(3))
    c = T.to_model_input(images, (0.5,) * 3, (0.5,) * 3, True, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), before), "the global torch RNG must not be used"


def test_random_resized_crop_boxes_follow_torchvision_ranges():
    boxes = T._random_resized_crop_boxes(4000, 84, 84, T.RGB_CROP_SCALE, T.RGB_CROP_RATIO,
                                         torch.Generator().manual_seed(0))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 84).all() and (left + w <= 84).all()
    area = h * w / 84 ** 2
    assert area.min() >= 0.08 * 0.9 and area.max() <= 1.0
    assert ((w / h) >= 0.7).all() and ((w / h) <= 1.45).all()  # 3/4 .. 4/3 up to rounding
    assert 0.45 < area.mean() < 0.6, "area is uniform on [0.08, 1] for most draws"


def test_crop_resamples_the_box_like_crop_then_bilinear_resize():
    images = torch.rand(1, 3, 16, 16)
    box = torch.tensor([[4.0, 2.0, 8.0, 8.0]], dtype=torch.float64)
    out = T._crop_flip_resample(images, box, torch.tensor([False]))
    reference = F.interpolate(images[:, :, 4:12, 2:10], size=(16, 16), mode="bilinear", align_corners=False)
    # Identical away from the edge; at the edge this samples the true neighbours outside the box
    # where crop-then-resize replicates the box's border.
    torch.testing.assert_close(out[..., 1:-1, 1:-1], reference[..., 1:-1, 1:-1])
    whole = torch.tensor([[0.0, 0.0, 16.0, 16.0]], dtype=torch.float64)
    torch.testing.assert_close(T._crop_flip_resample(images, whole, torch.tensor([False])), images)
    torch.testing.assert_close(T._crop_flip_resample(images, whole, torch.tensor([True])), images.flip(-1))


def test_colour_jitter_matches_pil_image_enhance_in_closer_looks_order():
    rng = np.random.default_rng(1)
    images = rng.integers(80, 176, (4, 8, 8, 3), dtype=np.uint8)  # mid-range: no clipping
    generator = torch.Generator().manual_seed(7)
    ours = T._colour_jitter(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, generator)
    replay = torch.Generator().manual_seed(7)
    brightness, contrast, colour = (T._jitter_factors(4, replay) for _ in range(3))
    assert ((brightness >= 0.6) & (brightness <= 1.4)).all()
    for i in range(4):
        image = Image.fromarray(images[i])
        for enhancer, factor in ((ImageEnhance.Brightness, brightness), (ImageEnhance.Contrast, contrast),
                                 (ImageEnhance.Color, colour)):
            image = enhancer(image).enhance(float(factor[i]))
        expected = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
        # PIL rounds to uint8 after each step and its contrast uses the rounded mean grey.
        assert (ours[i] - expected).abs().max() < 3.5 / 255


def test_rgb_augmentation_stays_in_range_and_changes_images():
    batch = torch.from_numpy(uint8_batch(n=32, size=24)).permute(0, 3, 1, 2).float() / 255
    out = T.augment_batch(batch, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and out.min() >= 0 and out.max() <= 1
    assert (out - batch).abs().mean(dim=(1, 2, 3)).min() > 0.01


def test_grayscale_augmentation_is_a_mild_crop_without_flip():
    # A left-right asymmetric image: a mirrored copy would correlate negatively with it.
    image = torch.zeros(1, 1, 28, 28)
    image[..., :, :9] = 1.0
    out = T.augment_batch(image.expand(64, 1, 28, 28).contiguous(), torch.Generator().manual_seed(0))
    left, right = out[..., :, :14].mean(dim=(1, 2, 3)), out[..., :, 14:].mean(dim=(1, 2, 3))
    assert (left > right).all(), "grayscale images must never be mirrored"
    boxes = T._random_resized_crop_boxes(500, 28, 28, T.GRAY_CROP_SCALE, T.GRAY_CROP_RATIO,
                                         torch.Generator().manual_seed(0))
    assert (boxes[:, 2] * boxes[:, 3] / 28 ** 2).min() >= 0.8
