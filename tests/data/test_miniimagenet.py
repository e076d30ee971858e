"""Specification of the miniImageNet loader: three on-disk layouts, caching, and bad input."""

from __future__ import annotations

import csv
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fewshot_acdc.data import (CorruptDataError, DatasetNotFoundError, UnsafePickleError,
                               create_dataset)
from fewshot_acdc.data import folder as folder_module
from fewshot_acdc.data import miniimagenet as mini_module
from fewshot_acdc.data.miniimagenet import MINIIMAGENET_MEAN, MINIIMAGENET_STD, read_split_csv

from .conftest import class_image, require, save_png

SPLIT_CLASSES = {"train": ["n0001", "n0002", "n0003", "n0004"], "val": ["n0101", "n0102"],
                 "test": ["n0201", "n0202", "n0203"]}
PER_CLASS = 5
SIZE = 12


def source_images(split: str) -> tuple[list[str], np.ndarray, list[str]]:
    """(filenames, uint8 images, labels) of a split, in class order, as in Ravi's CSVs."""
    names, images, labels = [], [], []
    for c, wnid in enumerate(SPLIT_CLASSES[split]):
        for i in range(PER_CLASS):
            names.append(f"{wnid}{i:08d}.png")
            images.append(class_image(hash_class(wnid), i, SIZE))
            labels.append(wnid)
    return names, np.stack(images), labels


def hash_class(wnid: str) -> int:
    return int(wnid[1:])


def make_pickle_layout(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for split, file_split in (("train", "train"), ("val", "validation"), ("test", "test")):
        _, images, labels = source_images(split)
        # Shuffle the storage order: class_dict, not position, defines classes and their order.
        order = np.random.default_rng(0).permutation(len(labels))
        position_of = np.argsort(order)
        class_dict: dict[str, list[int]] = {}
        for original, label in enumerate(labels):
            class_dict.setdefault(label, []).append(int(position_of[original]))
        data = {"image_data": images[order], "class_dict": class_dict}
        (root / f"mini-imagenet-cache-{file_split}.pkl").write_bytes(pickle.dumps(data, protocol=2))


def make_csv_layout(root: Path, per_class_folders: bool) -> None:
    for split in SPLIT_CLASSES:
        names, images, labels = source_images(split)
        root.mkdir(parents=True, exist_ok=True)
        with open(root / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["filename", "label"])
            writer.writerows(zip(names, labels))
        for name, image, label in zip(names, images, labels):
            save_png(root / "images" / (label if per_class_folders else "") / name, image)


def make_folder_layout(root: Path, val_name: str = "val") -> None:
    for split in SPLIT_CLASSES:
        names, images, labels = source_images(split)
        for name, image, label in zip(names, images, labels):
            save_png(root / (val_name if split == "val" else split) / label / name, image)


LAYOUT_BUILDERS = {
    "pickle": make_pickle_layout,
    "csv-flat": lambda root: make_csv_layout(root, per_class_folders=False),
    "csv-per-class": lambda root: make_csv_layout(root, per_class_folders=True),
    "folders": make_folder_layout,
    "folders-validation": lambda root: make_folder_layout(root, "validation"),
}


@pytest.mark.parametrize("layout", sorted(LAYOUT_BUILDERS))
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_every_layout_gives_the_same_classes_labels_and_pixels(tmp_path, cache_dir, layout, split):
    LAYOUT_BUILDERS[layout](tmp_path / "mini")
    dataset = create_dataset("miniimagenet", split, root=tmp_path / "mini", image_size=SIZE, cache_dir=cache_dir)
    _, images, labels = source_images(split)
    assert list(dataset.class_names) == SPLIT_CLASSES[split]
    assert dataset.num_classes == len(SPLIT_CLASSES[split]) and len(dataset) == len(labels)
    assert dataset.labels.tolist() == [SPLIT_CLASSES[split].index(label) for label in labels]
    assert np.array_equal(dataset.images, images)
    assert dataset.channels == 3 and dataset.image_size == SIZE
    assert dataset.mean == MINIIMAGENET_MEAN and dataset.std == MINIIMAGENET_STD
    assert dataset.identifier == "miniimagenet" and dataset.split == split


def test_default_image_size_is_84_and_images_are_resized(tmp_path, cache_dir):
    make_folder_layout(tmp_path / "mini")
    dataset = create_dataset("miniimagenet", "val", root=tmp_path / "mini", cache_dir=cache_dir)
    assert dataset.images.shape == (len(SPLIT_CLASSES["val"]) * PER_CLASS, 84, 84, 3)
    small = create_dataset("miniimagenet", "val", root=tmp_path / "mini", image_size=6, cache_dir=cache_dir)
    assert small.images.shape[1:] == (6, 6, 3)
    # Resizing keeps each image's dominant colour (the class colour).
    _, originals, _ = source_images("val")
    assert np.abs(np.median(small.images, axis=(1, 2)) - np.median(originals, axis=(1, 2))).max() <= 2


def test_pickle_is_preferred_when_several_layouts_are_present(tmp_path, cache_dir):
    make_folder_layout(tmp_path / "mini")
    make_pickle_layout(tmp_path / "mini")
    dataset = create_dataset("miniimagenet", "test", root=tmp_path / "mini", image_size=SIZE, cache_dir=cache_dir)
    assert dataset.layout.startswith("pickle cache")
    forced = create_dataset("miniimagenet", "test", root=tmp_path / "mini", image_size=SIZE,
                            cache_dir=cache_dir, layout="folders")
    assert forced.layout.startswith("folder per class")


def test_root_may_be_the_parent_folder_or_come_from_FEWSHOT_DATA(tmp_path, cache_dir, monkeypatch):
    make_folder_layout(tmp_path / "data" / "miniimagenet")
    by_parent = create_dataset("miniimagenet", "val", root=tmp_path / "data", image_size=SIZE, cache_dir=cache_dir)
    monkeypatch.setenv("FEWSHOT_DATA", str(tmp_path / "data"))
    by_env = create_dataset("miniimagenet", "val", image_size=SIZE, cache_dir=cache_dir)
    assert by_parent.class_names == by_env.class_names == tuple(SPLIT_CLASSES["val"])


def test_decoded_images_are_cached_memory_mapped_and_rebuilt_when_a_source_changes(tmp_path, cache_dir, monkeypatch):
    make_folder_layout(tmp_path / "mini")
    first = create_dataset("miniimagenet", "train", root=tmp_path / "mini", image_size=SIZE, cache_dir=cache_dir)
    assert len(list((cache_dir / "images").glob("miniimagenet-train-12px-*.npy"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although cached")

    monkeypatch.setattr(folder_module, "decode_image", no_decoding)
    second = create_dataset("miniimagenet", "train", root=tmp_path / "mini", image_size=SIZE, cache_dir=cache_dir)
    assert isinstance(second.stored_images, np.memmap)
    assert np.array_equal(first.images, second.images)
    monkeypatch.undo()

    changed = tmp_path / "mini" / "train" / "n0001" / "n000100000000.png"
    save_png(changed, np.zeros((SIZE, SIZE, 3), dtype=np.uint8))
    os.utime(changed, ns=(1, 1))
    third = create_dataset("miniimagenet", "train", root=tmp_path / "mini", image_size=SIZE, cache_dir=cache_dir)
    assert third.images[0].max() == 0


def test_pickle_layout_cache_avoids_unpickling_again(tmp_path, cache_dir, monkeypatch):
    make_pickle_layout(tmp_path / "mini")
    first = create_dataset("miniimagenet", "train", root=tmp_path / "mini", image_size=SIZE, cache_dir=cache_dir)

    def no_unpickling(path):
        raise AssertionError("unpickled again although cached")

    monkeypatch.setattr(mini_module, "safe_load_pickle", no_unpickling)
    second = create_dataset("miniimagenet", "train", root=tmp_path / "mini", image_size=SIZE, cache_dir=cache_dir)
    assert np.array_equal(first.labels, second.labels) and np.array_equal(first.images, second.images)


def test_cache_false_keeps_images_in_memory_only(tmp_path, cache_dir):
    make_folder_layout(tmp_path / "mini")
    dataset = create_dataset("miniimagenet", "val", root=tmp_path / "mini", image_size=SIZE,
                             cache_dir=cache_dir, cache=False)
    assert not cache_dir.exists() and not isinstance(dataset.stored_images, np.memmap)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("make_root", ["missing", "empty"])
def test_missing_or_empty_root_names_layouts_paths_and_where_to_get_the_data(tmp_path, cache_dir, make_root):
    root = tmp_path / "nothing-here"
    if make_root == "empty":
        root.mkdir()
    with pytest.raises(DatasetNotFoundError) as error:
        create_dataset("miniimagenet", "val", root=root, cache_dir=cache_dir)
    message = str(error.value)
    assert isinstance(error.value, FileNotFoundError)
    assert str(root) in message
    assert "mini-imagenet-cache-validation.pkl" in message          # layout (a)
    assert "val.csv" in message and "images" in message              # layout (b)
    assert "folder per class" in message                             # layout (c)
    assert "zenodo.org" in message and "meta-learning-lstm" in message
    assert "--dataset builtin" in message


def test_csv_without_images_folder_names_the_missing_folder(tmp_path, cache_dir):
    make_csv_layout(tmp_path / "mini", per_class_folders=False)
    for path in (tmp_path / "mini" / "images").iterdir():
        path.unlink()
    (tmp_path / "mini" / "images").rmdir()
    with pytest.raises(DatasetNotFoundError, match=r"no images folder .*images"):
        create_dataset("miniimagenet", "train", root=tmp_path / "mini", cache_dir=cache_dir)


def test_csv_listing_absent_images_names_them(tmp_path, cache_dir):
    make_csv_layout(tmp_path / "mini", per_class_folders=True)
    (tmp_path / "mini" / "images" / "n0102" / "n010200000003.png").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"val.csv lists 1 images not found .*n010200000003.png"):
        create_dataset("miniimagenet", "val", root=tmp_path / "mini", cache_dir=cache_dir)


def test_malformed_csv_names_the_file_and_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("filename,label\na.jpg,n1\nb.jpg\n")
    with pytest.raises(CorruptDataError, match=r"train.csv: line 3"):
        read_split_csv(path)
    path.write_text("name,class\na.jpg,n1\n")
    with pytest.raises(CorruptDataError, match="header"):
        read_split_csv(path)


def test_a_corrupt_jpeg_names_the_file(tmp_path, cache_dir):
    make_folder_layout(tmp_path / "mini")
    buffer = io.BytesIO()
    Image.fromarray(class_image(1, 0, 64)).save(buffer, format="JPEG")
    bad = tmp_path / "mini" / "test" / "n0202" / "broken.jpg"
    bad.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(CorruptDataError) as error:
        create_dataset("miniimagenet", "test", root=tmp_path / "mini", cache_dir=cache_dir)
    assert str(bad) in str(error.value)
    assert not list((cache_dir / "images").glob("*.npy")), "a failed build must not leave a cache file"


def test_a_malicious_pickle_cache_is_refused_naming_file_and_global(tmp_path, cache_dir):
    root = tmp_path / "mini"
    root.mkdir()
    path = root / "mini-imagenet-cache-train.pkl"
    path.write_bytes(b"cos\nsystem\n(S'echo owned'\ntR.")
    with pytest.raises(UnsafePickleError) as error:
        create_dataset("miniimagenet", "train", root=root, cache_dir=cache_dir)
    assert str(path) in str(error.value) and "os.system" in str(error.value)


def test_a_truncated_pickle_cache_names_the_file(tmp_path, cache_dir):
    make_pickle_layout(tmp_path / "mini")
    path = tmp_path / "mini" / "mini-imagenet-cache-test.pkl"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CorruptDataError, match="mini-imagenet-cache-test.pkl"):
        create_dataset("miniimagenet", "test", root=tmp_path / "mini", cache_dir=cache_dir)


@pytest.mark.parametrize("payload, problem", [
    ({"images": np.zeros((1, 4, 4, 3), np.uint8)}, "expected a dict with 'image_data' and 'class_dict'"),
    ({"image_data": np.zeros((2, 4, 4), np.uint8), "class_dict": {"a": [0, 1]}}, "uint8 \\[N, H, W, 3\\]"),
    ({"image_data": np.zeros((2, 4, 4, 3), np.uint8), "class_dict": {"a": [0]}}, "belong to no class"),
    ({"image_data": np.zeros((2, 4, 4, 3), np.uint8), "class_dict": {"a": [0, 5]}}, "outside"),
    ({"image_data": np.zeros((2, 4, 4, 3), np.uint8), "class_dict": {"a": [0, 1], "b": [1]}}, "more than one class"),
])
def test_a_pickle_with_the_wrong_structure_names_the_file_and_problem(tmp_path, cache_dir, payload, problem):
    root = tmp_path / "mini"
    root.mkdir()
    (root / "mini-imagenet-cache-train.pkl").write_bytes(pickle.dumps(payload))
    with pytest.raises(CorruptDataError, match=problem) as error:
        create_dataset("miniimagenet", "train", root=root, cache_dir=cache_dir)
    assert "mini-imagenet-cache-train.pkl" in str(error.value)


# ----------------------------------------------------------------------------- real data
@pytest.mark.real_data
def test_ravi_split_csvs_have_64_16_20_disjoint_classes_of_600_images(real_data):
    folder = require(real_data / "miniimagenet_split")
    classes = {}
    for split, expected in (("train", 64), ("val", 16), ("test", 20)):
        filenames, labels = read_split_csv(require(folder / f"{split}.csv"))
        counts = {label: labels.count(label) for label in set(labels)}
        assert len(counts) == expected and set(counts.values()) == {600}
        assert len(set(filenames)) == len(filenames) == expected * 600
        assert all(name.startswith(label) for name, label in zip(filenames, labels))
        classes[split] = set(counts)
    assert not classes["train"] & classes["val"] and not classes["train"] & classes["test"]
    assert not classes["val"] & classes["test"]


@pytest.mark.real_data
def test_real_split_csvs_without_images_give_a_clear_error(real_data, tmp_path, cache_dir):
    csv_path = require(real_data / "miniimagenet_split" / "val.csv")
    (tmp_path / "mini").mkdir()
    (tmp_path / "mini" / "val.csv").symlink_to(csv_path)
    with pytest.raises(DatasetNotFoundError, match="no images folder"):
        create_dataset("miniimagenet", "val", root=tmp_path / "mini", cache_dir=cache_dir)
