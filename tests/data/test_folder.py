"""Specification of the folder-per-class layout (custom / tieredImageNet-like data)."""

from __future__ import annotations

import numpy as np
import pytest

from fewshot_acdc.data import DatasetNotFoundError, ImpossibleEpisodeError, create_dataset, episode_loader
from fewshot_acdc.data.folder import IMAGENET_MEAN, IMAGENET_STD, scan_class_folders

from .conftest import class_image, save_png


@pytest.fixture
def tiered(tmp_path):
    root = tmp_path / "tiered"
    for c, name in enumerate(["zebra", "apple", "mango"]):
        for i in range(3):
            save_png(root / "train" / name / f"img{2 - i}.png", class_image(c, i))
    (root / "train" / "apple" / "notes.txt").write_text("not an image")
    (root / "train" / "apple" / ".hidden.png").write_bytes(b"ignored")
    (root / "train" / ".cache").mkdir()
    (root / "train" / "empty").mkdir()
    return root


def test_classes_are_sorted_folders_and_files_sorted_images_only(tiered):
    names, files, labels = scan_class_folders(tiered / "train")
    assert names == ["apple", "empty", "mango", "zebra"]
    assert [f.name for f in files[:3]] == ["img0.png", "img1.png", "img2.png"]
    assert labels.tolist() == [0, 0, 0, 2, 2, 2, 3, 3, 3]


def test_folder_dataset_uses_imagenet_statistics_and_its_own_identifier(tiered, cache_dir):
    dataset = create_dataset("folder", "train", root=tiered, image_size=12, cache_dir=cache_dir)
    assert dataset.identifier == "folder-tiered" and dataset.mean == IMAGENET_MEAN and dataset.std == IMAGENET_STD
    assert dataset.num_classes == 4 and len(dataset) == 9
    # img0.png of "apple" (class_image(1, 2)) is the first image.
    assert np.array_equal(dataset.images[0], class_image(1, 2))


def test_an_empty_class_folder_is_named_when_episodes_are_requested(tiered, cache_dir):
    dataset = create_dataset("folder", "train", root=tiered, image_size=12, cache_dir=cache_dir)
    with pytest.raises(ImpossibleEpisodeError, match="class 'empty' has only 0 images"):
        episode_loader(dataset, 2, 1, 1, seed=0)


def test_missing_split_or_root_is_a_clear_error(tiered, tmp_path, cache_dir):
    with pytest.raises(DatasetNotFoundError, match="folder-per-class layout .*val/<class>/<image>"):
        create_dataset("folder", "val", root=tiered, cache_dir=cache_dir)
    with pytest.raises(DatasetNotFoundError, match="needs root"):
        create_dataset("folder", "train", cache_dir=cache_dir)
    (tmp_path / "bare" / "test").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no class sub-folders"):
        create_dataset("folder", "test", root=tmp_path / "bare", cache_dir=cache_dir)
