"""Specification of create_dataset: names, splits, defaults, options, and default roots."""

from __future__ import annotations

import pytest

from fewshot_acdc.data import DATASETS, SPLITS, FewShotDataset, create_dataset

from .conftest import class_image, save_png


def test_the_registry_knows_the_project_datasets_and_splits():
    assert {"builtin", "miniimagenet", "omniglot"} <= set(DATASETS) and SPLITS == ("train", "val", "test")


def test_unknown_names_splits_and_sizes_are_value_errors():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*builtin"):
        create_dataset("imagenet", "train")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        create_dataset("builtin", "dev")
    with pytest.raises(ValueError, match="image_size"):
        create_dataset("builtin", "train", image_size=0)


def test_options_a_dataset_does_not_take_are_type_errors_listing_what_it_takes():
    with pytest.raises(TypeError, match="'builtin' does not take option\\(s\\) rotations.*images_per_class"):
        create_dataset("builtin", "train", rotations=True)


def test_builtin_needs_no_root_and_ignores_one(tmp_path):
    dataset = create_dataset("builtin", "validation", root=tmp_path / "nowhere", image_size=16,
                             class_counts=(1, 2, 1), images_per_class=2, cache=False)
    assert isinstance(dataset, FewShotDataset) and dataset.split == "val" and dataset.name == "builtin"


def test_default_root_is_FEWSHOT_DATA_then_dot_data(tmp_path, monkeypatch, cache_dir):
    image = class_image(0, 0)
    save_png(tmp_path / "env" / "miniimagenet" / "test" / "n1" / "a.png", image)
    save_png(tmp_path / "cwd" / "data" / "mini-imagenet" / "test" / "n2" / "b.png", image)
    monkeypatch.setenv("FEWSHOT_DATA", str(tmp_path / "env"))
    assert create_dataset("miniimagenet", "test", image_size=12, cache_dir=cache_dir).class_names == ("n1",)
    monkeypatch.delenv("FEWSHOT_DATA")
    monkeypatch.chdir(tmp_path / "cwd")
    assert create_dataset("mini-imagenet", "test", image_size=12, cache_dir=cache_dir).class_names == ("n2",)
