"""Specification of the built-in generated dataset: deterministic, disjoint, learnable."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fewshot_acdc.data import EpisodeSampler, create_dataset
from fewshot_acdc.data.builtin import (BUILTIN_MEAN, BUILTIN_STD, _design, generate_class_images)


def small(split: str, **kwargs):
    options = dict(class_counts=(12, 6, 6), images_per_class=6, image_size=32, cache=False)
    options.update(kwargs)
    return create_dataset("builtin", split, **options)


def test_same_seed_gives_bit_identical_images_and_another_seed_another_world():
    a, b = small("train", seed=0), small("train", seed=0)
    assert np.array_equal(a.images, b.images)
    other = small("train", seed=1)
    assert not np.array_equal(a.images, other.images)
    assert a.class_names != other.class_names, "worlds must not share class names (episode-file checksums)"


def test_golden_checksum_pins_the_images_across_machines_and_versions():
    # The generator promises the same bits on every machine and numpy version for a seed. This
    # hash was computed when GENERATOR_VERSION was 1; a change means cached images and saved
    # results for "builtin" are no longer comparable: bump GENERATOR_VERSION, never just the hash.
    digest = hashlib.sha256()
    for split in ("train", "val", "test"):
        for c in (0, 1, 57):
            digest.update(generate_class_images(0, split, c, 3, 32).tobytes())
    assert digest.hexdigest() == "37769939a6187c477e3d80d88ba6ae2f5bc95b0f99a9a8a10c690309c2161e38"


def test_image_j_of_a_class_does_not_depend_on_how_many_are_generated():
    many = generate_class_images(0, "val", 3, 6, 32)
    assert np.array_equal(many[4:6], generate_class_images(0, "val", 3, 2, 32, first=4))
    dataset = small("val", images_per_class=4)
    assert np.array_equal(dataset.get_images(dataset.class_indices()[3]), many[:4])


@pytest.fixture(scope="module")
def default_splits():
    """The three default splits, shrunk to one 8 px image per class so they build quickly."""
    return {s: create_dataset("builtin", s, image_size=8, images_per_class=1, cache=False)
            for s in ("train", "val", "test")}


def test_default_splits_have_hundreds_of_classes(default_splits):
    assert {s: d.num_classes for s, d in default_splits.items()} == {"train": 384, "val": 96, "test": 120}
    assert all(d.identifier.startswith("builtin-") for d in default_splits.values()), \
        "non-default images_per_class must get its own episode files"


def test_defaults_are_84px_rgb_40_images_per_class_and_the_reference_identifier():
    dataset = create_dataset("builtin", "val", class_counts=(1, 2, 1), cache=False)
    assert dataset.images.shape == (80, 84, 84, 3) and dataset.images.dtype == np.uint8
    assert dataset.channels == 3 and dataset.image_size == 84
    assert create_dataset("builtin", "val", image_size=8, cache=False).identifier == "builtin"


def test_splits_are_disjoint_classes(default_splits):
    names = [set(default_splits[s].class_names) for s in ("train", "val", "test")]
    assert not names[0] & names[1] and not names[0] & names[2] and not names[1] & names[2]
    # Class c of each split has its own design (shape and palette), not a copy of another split's.
    for c in range(20):
        designs = [_design(0, split_id, c) for split_id in range(3)]
        primaries = [tuple(np.round(d["primary"], 6)) for d in designs]
        assert len(set(primaries)) == 3


def test_instances_vary_within_a_class():
    images = generate_class_images(0, "train", 0, 8, 64).astype(np.int16)
    differences = [np.abs(images[i] - images[j]).mean() for i in range(8) for j in range(i + 1, 8)]
    assert min(differences) > 10, "instances must differ in pose, background and clutter"


def nearest_centroid_accuracy(features: np.ndarray, labels: np.ndarray, episodes: int = 150) -> float:
    sampler = EpisodeSampler(labels, ways=5, shots=5, queries=10, seed=0)
    correct = []
    for i in range(episodes):
        e = sampler.sample(i)
        centroids = features[e.support].reshape(5, 5, -1).mean(axis=1)
        distances = ((features[e.query][:, None, :] - centroids[None]) ** 2).sum(-1)
        correct.append(distances.argmin(axis=1) == e.query_labels())
    return float(np.mean(correct))


def test_classes_are_distinguishable_by_a_nearest_centroid_classifier():
    """Learnable, not noise: even on raw pixels, or colour histograms, a nearest-centroid
    classifier beats chance (0.2) on 5-way 5-shot episodes of unseen (test) classes."""
    dataset = create_dataset("builtin", "test", class_counts=(1, 1, 40), images_per_class=15, cache=False)
    pixels = dataset.images.astype(np.float32) / 255.0
    raw = pixels.reshape(len(dataset), -1)
    bins = np.minimum((pixels * 4).astype(np.int64), 3)
    codes = (bins[..., 0] * 16 + bins[..., 1] * 4 + bins[..., 2]).reshape(len(dataset), -1)
    histograms = np.sqrt(np.stack([np.bincount(c, minlength=64) for c in codes]) / codes.shape[1])
    assert nearest_centroid_accuracy(raw, dataset.labels) > 0.28
    assert nearest_centroid_accuracy(histograms, dataset.labels) > 0.36


def test_normalization_constants_match_the_generated_pixels():
    dataset = create_dataset("builtin", "train", class_counts=(60, 1, 1), images_per_class=4, image_size=48, cache=False)
    pixels = dataset.images.reshape(-1, 3).astype(np.float64) / 255.0
    assert np.abs(pixels.mean(axis=0) - BUILTIN_MEAN).max() < 0.04
    assert np.abs(pixels.std(axis=0) - BUILTIN_STD).max() < 0.04


def test_the_generated_split_is_cached_and_memory_mapped(cache_dir):
    first = create_dataset("builtin", "val", class_counts=(1, 3, 1), images_per_class=2, image_size=16, cache_dir=cache_dir)
    second = create_dataset("builtin", "val", class_counts=(1, 3, 1), images_per_class=2, image_size=16, cache_dir=cache_dir)
    assert isinstance(second.stored_images, np.memmap) and np.array_equal(first.images, second.images)
    assert len(list((cache_dir / "images").glob("builtin-seed0-val-16px-*.npy"))) == 1


def test_bad_builtin_options_are_refused():
    with pytest.raises(ValueError):
        create_dataset("builtin", "train", class_counts=(0, 1, 1), cache=False)
    with pytest.raises(ValueError):
        create_dataset("builtin", "train", image_size=4, cache=False)
    with pytest.raises(ValueError):
        create_dataset("builtin", "train", seed=-3, cache=False)
