"""Specification of FewShotDataset / ArrayDataset: uint8 storage, lookups, virtual rotations."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from fewshot_acdc.data import ArrayDataset


def make(images=None, labels=None, **kwargs) -> ArrayDataset:
    images = np.arange(4 * 3 * 3, dtype=np.uint8).reshape(4, 3, 3, 1) if images is None else images
    labels = np.array([0, 0, 1, 1]) if labels is None else labels
    defaults = dict(name="toy", split="train", mean=(0.5,), std=(0.5,))
    return ArrayDataset(images, labels, ["a", "b"], **{**defaults, **kwargs})


def test_basic_accessors():
    dataset = make()
    assert dataset.num_classes == 2 and len(dataset) == 4 and dataset.channels == 1 and dataset.image_size == 3
    image, label = dataset[3]
    assert image.shape == (3, 3, 1) and image.dtype == np.uint8 and label == 1
    assert [c.tolist() for c in dataset.class_indices()] == [[0, 1], [2, 3]]
    assert dataset.get_images([2, 0]).shape == (2, 3, 3, 1)
    with pytest.raises(IndexError):
        dataset.get_images([4])
    assert not dataset.labels.flags.writeable


def test_load_images_returns_normalized_float_tensors():
    out = make().load_images([1])
    expected = (torch.arange(9, 18, dtype=torch.float32).view(1, 1, 3, 3) / 255 - 0.5) / 0.5
    torch.testing.assert_close(out, expected)


def test_inconsistent_inputs_are_refused():
    with pytest.raises(ValueError):
        make(labels=np.array([0, 0, 1]))
    with pytest.raises(ValueError):
        make(labels=np.array([0, 0, 1, 2]))
    with pytest.raises(ValueError):
        make(images=np.zeros((4, 3, 3, 1), dtype=np.float32))
    with pytest.raises(ValueError):
        make(mean=(0.5, 0.5, 0.5))


def test_virtual_rotations_rotate_the_stored_image_counter_clockwise():
    base = np.zeros((1, 3, 3, 1), dtype=np.uint8)
    base[0, 0, 2, 0] = 255  # top-right corner
    dataset = ArrayDataset(base, np.array([0, 1, 2, 3]), ["r0", "r90", "r180", "r270"], name="toy", split="train",
                           mean=(0.5,), std=(0.5,), source_index=np.zeros(4, dtype=np.int64),
                           quarter_turns=np.arange(4))
    corners = [tuple(np.argwhere(img[:, :, 0])[0]) for img in dataset.get_images([0, 1, 2, 3])]
    assert corners == [(0, 2), (0, 0), (2, 0), (2, 2)]


def test_fingerprint_changes_with_class_names_and_labels():
    a, b = make(), make(labels=np.array([0, 1, 1, 1]))
    assert a.fingerprint()["class_list_sha256"] == b.fingerprint()["class_list_sha256"]
    assert a.fingerprint()["labels_sha256"] != b.fingerprint()["labels_sha256"]


def test_memory_mapped_stores_pickle_as_a_file_reference(tmp_path):
    path = tmp_path / "images.npy"
    np.save(path, np.arange(4 * 3 * 3, dtype=np.uint8).reshape(4, 3, 3, 1))
    dataset = make(images=np.load(path, mmap_mode="r"))
    payload = pickle.dumps(dataset)
    assert len(payload) < 2000 or str(path).encode() in payload
    clone = pickle.loads(payload)
    assert isinstance(clone.stored_images, np.memmap) and np.array_equal(clone.images, dataset.images)
