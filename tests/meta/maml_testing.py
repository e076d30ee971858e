"""Shared helpers of the MAML tests: deterministic tiny models and episodes, reference imports."""
from __future__ import annotations

import contextlib
import io
import warnings

import pytest
import torch

from fewshot_acdc.meta import Episode
from fewshot_acdc.models import create_backbone


def import_reference(name: str):
    """Import learn2learn/higher or skip; learn2learn's gym import prints a deprecation notice."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return pytest.importorskip(name)


def build_model(backbone: str = "conv4", conv: str = "acdc-net", seed: int = 0, image_size: int = 32,
                dtype: torch.dtype = torch.float64, ways: int = 5, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_backbone(backbone, conv, num_classes=ways, image_size=image_size,
                            track_running_stats=False, **kwargs)
    return model.to(dtype)


def random_episode(seed: int, ways: int = 5, shots: int = 1, queries: int = 2, image_size: int = 32,
                   channels: int = 3, dtype: torch.dtype = torch.float64) -> Episode:
    """Random images, labels 0..ways-1 in shuffled order."""
    generator = torch.Generator().manual_seed(seed)

    def labelled(per_class: int):
        labels = torch.arange(ways).repeat_interleave(per_class)
        labels = labels[torch.randperm(labels.numel(), generator=generator)]
        images = torch.randn(labels.numel(), channels, image_size, image_size, generator=generator, dtype=dtype)
        return images, labels

    return Episode(*labelled(shots), *labelled(queries))


def structured_episode(seed: int, ways: int = 5, shots: int = 2, queries: int = 3, image_size: int = 32,
                       channels: int = 3, noise: float = 0.5, dtype: torch.dtype = torch.float32) -> Episode:
    """Each class a random smooth prototype image plus noise: a learnable episode."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(ways, channels, 4, 4, generator=generator)
    prototypes = torch.nn.functional.interpolate(coarse, size=image_size, mode="bilinear", align_corners=False)

    def labelled(per_class: int):
        labels = torch.arange(ways).repeat_interleave(per_class)
        images = prototypes[labels] + noise * torch.randn(labels.numel(), channels, image_size, image_size,
                                                          generator=generator)
        return images.to(dtype), labels

    return Episode(*labelled(shots), *labelled(queries))


def max_relative_error(ours: dict, theirs: dict) -> float:
    """Largest over tensors of max|ours - theirs| / max|theirs| (scale-relative, elementwise)."""
    assert ours.keys() == theirs.keys()
    worst = 0.0
    for name in ours:
        scale = theirs[name].abs().max().clamp_min(1e-300)
        worst = max(worst, float((ours[name] - theirs[name]).abs().max() / scale))
    return worst
