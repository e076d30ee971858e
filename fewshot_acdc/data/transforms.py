"""Turning stored uint8 images into model input: normalization and training augmentation.

Everything here works on a whole batch (an episode) at once and draws its randomness from an
explicit ``torch.Generator``, so augmentations are reproducible per episode no matter which
DataLoader worker builds it, and the global RNG is never touched.

Augmentation for RGB follows "A Closer Look at Few-shot Classification" (Chen et al., 2019):
RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3), ImageJitter with brightness, contrast and colour
(saturation) factors in [0.6, 1.4] applied in that order (PIL ImageEnhance semantics), and a
horizontal flip with probability 1/2. Grayscale (Omniglot) gets only a mild RandomResizedCrop
(scale 0.85-1, ratio 0.9-1.1): no flip, because a mirrored character can be a different
character, and no colour jitter.

Deliberate differences from the torchvision/PIL pipeline, each to do the whole episode in a few
batched passes: the crop is resampled with one bilinear grid_sample over the full image, so at the
crop's edge it reads the true neighbouring pixels where crop-then-resize repeats the border row;
the three jitter steps are one affine colour map clipped once at the end (PIL clips after each
step; they differ only where an intermediate step saturates); augmented pixels are rounded back
to uint8, as PIL does, before normalization.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

RGB_CROP_SCALE = (0.08, 1.0)
RGB_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
GRAY_CROP_SCALE = (0.85, 1.0)
GRAY_CROP_RATIO = (0.9, 1.0 / 0.9)
JITTER_STRENGTH = 0.4  # Closer Look's jitter_param for Brightness, Contrast and Color

# ITU-R 601-2 luma, as PIL's convert("L") uses.
_LUMA = (0.299, 0.587, 0.114)


def _check_uint8(images: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 [n, H, W, C] images, got {images.dtype} {images.shape}")


# dtype conversions go through numpy: on the CPU builds measured (torch 2.14, x86), numpy's
# uint8 <-> float32 casts are about 4x faster than Tensor.to and give identical values.
def _nchw_uint8(images: np.ndarray) -> np.ndarray:
    _check_uint8(images)
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def to_float_batch(images: np.ndarray) -> torch.Tensor:
    """uint8 [n, H, W, C] -> float32 [n, C, H, W] in [0, 1]."""
    return torch.from_numpy(_nchw_uint8(images).astype(np.float32)).div_(255.0)


def _affine(values: Sequence[float], channels: int, name: str) -> torch.Tensor:
    tensor = torch.tensor(values, dtype=torch.float64).view(1, -1, 1, 1)
    if tensor.shape[1] != channels:
        raise ValueError(f"{name} has {tensor.shape[1]} channels, images have {channels}")
    return tensor


def normalize_(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float],
               input_scale: float = 1.0) -> torch.Tensor:
    """In place: (x * input_scale - mean) / std per channel, as one multiply and one add."""
    channels = batch.shape[1]
    std_t = _affine(std, channels, "std")
    scale = (input_scale / std_t).to(batch.dtype)
    shift = (-_affine(mean, channels, "mean") / std_t).to(batch.dtype)
    return batch.mul_(scale).add_(shift)


def _random_resized_crop_boxes(
    n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """torchvision's RandomResizedCrop.get_params for n images at once -> [n, 4] (top, left, h, w).

    Ten candidate boxes per image; the first that fits is used, else the whole image (the
    fallback for square images, where the centre crop with clamped ratio is the whole image).
    """
    attempts = 10
    area = float(height * width)
    target_area = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, attempts, generator=generator, dtype=torch.float64))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, attempts, generator=generator, dtype=torch.float64))
    w = torch.round(torch.sqrt(target_area * aspect))
    h = torch.round(torch.sqrt(target_area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(fits.to(torch.int8), dim=1)
    any_fit = fits.any(dim=1)
    rows = torch.arange(n)
    h_sel = torch.where(any_fit, h[rows, first], torch.full((n,), float(height), dtype=torch.float64))
    w_sel = torch.where(any_fit, w[rows, first], torch.full((n,), float(width), dtype=torch.float64))
    u_top = torch.rand(n, generator=generator, dtype=torch.float64)
    u_left = torch.rand(n, generator=generator, dtype=torch.float64)
    top = torch.floor(u_top * (height - h_sel + 1))
    left = torch.floor(u_left * (width - w_sel + 1))
    return torch.stack([top, left, h_sel, w_sel], dim=1)


def _crop_flip_resample(batch: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Crop each image to its box, optionally mirror it, and resample to the original size.

    One batched bilinear grid_sample. The crop is axis-aligned, so the sampling grid is
    separable: x depends only on the output column, y only on the output row (built by
    broadcasting rather than by affine_grid's matrix product).
    """
    n, _, height, width = batch.shape
    top, left, h, w = boxes.unbind(1)
    # Output pixel centres in [-1, 1] (align_corners=False) mapped onto the box.
    out_x = (torch.arange(width, dtype=torch.float64) + 0.5) / width * 2.0 - 1.0
    out_y = (torch.arange(height, dtype=torch.float64) + 0.5) / height * 2.0 - 1.0
    sign = torch.where(flip, -1.0, 1.0).to(torch.float64)
    centre_x = (left + w / 2.0) / width * 2.0 - 1.0
    centre_y = (top + h / 2.0) / height * 2.0 - 1.0
    grid_x = (centre_x.view(n, 1) + (sign * w / width).view(n, 1) * out_x.view(1, width)).to(batch.dtype)
    grid_y = (centre_y.view(n, 1) + (h / height).view(n, 1) * out_y.view(1, height)).to(batch.dtype)
    grid = torch.stack([grid_x.view(n, 1, width).expand(n, height, width),
                        grid_y.view(n, height, 1).expand(n, height, width)], dim=-1)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _jitter_factors(n: int, generator: torch.Generator) -> torch.Tensor:
    return 1.0 + JITTER_STRENGTH * (2.0 * torch.rand(n, generator=generator, dtype=torch.float64) - 1.0)


def _colour_jitter(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Closer Look's ImageJitter (brightness, then contrast, then colour) as one affine map.

    Each PIL enhancement blends with a degenerate image: brightness with black (x -> b x),
    contrast with the image's mean grey m (x -> m + c (x - m)), colour with the pixel's own grey
    L x (x -> L x + s (x - L x)). Composed, that is x -> A x + (1 - c) m with
    A = b c (s I + (1 - s) L), where L is the 3 x 3 matrix whose rows are the luma weights: one
    batched matrix product instead of three passes. PIL clips to [0, 1] after every step, this
    clips once at the end; the two differ only where an intermediate step saturates.
    """
    n = batch.shape[0]
    brightness = _jitter_factors(n, generator)
    contrast = _jitter_factors(n, generator)
    colour = _jitter_factors(n, generator)
    luma = torch.tensor(_LUMA, dtype=torch.float64)
    grey_matrix = luma.expand(3, 3)  # every row = luma weights
    eye = torch.eye(3, dtype=torch.float64)
    matrix = (brightness * contrast).view(n, 1, 1) * (
        colour.view(n, 1, 1) * eye + (1.0 - colour).view(n, 1, 1) * grey_matrix)
    # Mean grey level after the brightness step (luma is linear, so b * mean grey of x).
    mean_grey = brightness * torch.einsum("c,nc->n", luma, batch.mean(dim=(2, 3)).to(torch.float64))
    offset = ((1.0 - contrast) * mean_grey).to(batch.dtype).view(n, 1, 1, 1)
    flat = batch.reshape(n, 3, -1)
    out = torch.bmm(matrix.to(batch.dtype), flat).view_as(batch)
    return out.add_(offset).clamp_(0.0, 1.0)


def augment_batch(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Training augmentation for a float [n, C, H, W] batch in [0, 1]; returns a new batch.

    C == 3: Closer Look (RandomResizedCrop, brightness/contrast/colour jitter 0.4, h-flip).
    C == 1: mild RandomResizedCrop only (see module docstring).
    """
    n, channels, height, width = batch.shape
    if n == 0:
        return batch.clone()
    if channels == 3:
        boxes = _random_resized_crop_boxes(n, height, width, RGB_CROP_SCALE, RGB_CROP_RATIO, generator)
        flip = torch.rand(n, generator=generator) < 0.5
        return _colour_jitter(_crop_flip_resample(batch, boxes, flip), generator)
    if channels == 1:
        boxes = _random_resized_crop_boxes(n, height, width, GRAY_CROP_SCALE, GRAY_CROP_RATIO, generator)
        flip = torch.zeros(n, dtype=torch.bool)
        return _crop_flip_resample(batch, boxes, flip)
    raise ValueError(f"augmentation supports 1 or 3 channels, got {channels}")


def to_uint8_batch(images: np.ndarray, augment: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 [n, H, W, C] -> uint8 [n, C, H, W], augmented (and rounded back to uint8) if asked.

    Episodes travel from DataLoader workers in this form, a quarter of the float32 size; the
    main process then applies :func:`normalize_uint8`. Rounding augmented pixels to uint8 is what
    PIL-based pipelines do after every step anyway, and it keeps the in-process and worker paths
    bit-identical.
    """
    if not augment:
        return torch.from_numpy(_nchw_uint8(images))
    if generator is None:
        raise ValueError("augment=True needs an explicit torch.Generator (no global RNG)")
    augmented = augment_batch(to_float_batch(images), generator)
    return torch.from_numpy(augmented.mul_(255.0).round_().numpy().astype(np.uint8))


def normalize_uint8(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 [n, C, H, W] -> float32 (x / 255 - mean) / std."""
    if batch.dtype != torch.uint8 or batch.dim() != 4:
        raise ValueError(f"expected uint8 [n, C, H, W], got {batch.dtype} {tuple(batch.shape)}")
    return normalize_(torch.from_numpy(batch.numpy().astype(np.float32)), mean, std, input_scale=1.0 / 255.0)


def to_model_input(
    images: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    augment: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """uint8 [n, H, W, C] -> normalized float32 [n, C, H, W], augmented when ``augment``."""
    return normalize_uint8(to_uint8_batch(images, augment, generator), mean, std)
