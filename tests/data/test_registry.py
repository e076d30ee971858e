"""Specification of create_dataset: names, splits, defaults, options, and default roots."""

from __future__ import annotations

import os

import pytest

from fewshot_acdc.data import DATASETS, SPLITS, DatasetNotFoundError, FewShotDataset, create_dataset
from fewshot_acdc.data.paths import data_root_from_env, default_data_root

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


def test_a_relative_FEWSHOT_DATA_is_made_absolute_where_it_is_read(tmp_path, monkeypatch, cache_dir):
    # The README's own form (FEWSHOT_DATA=../shared/data): kept relative, a symlink made from it
    # in another folder dangled (issue 17: test_real_split_csvs_without_images_give_a_clear_error).
    save_png(tmp_path / "cwd" / "data" / "miniimagenet" / "test" / "n1" / "a.png", class_image(0, 0))
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("FEWSHOT_DATA", "../cwd/./data")
    root = data_root_from_env()
    assert root.is_absolute() and ".." not in root.parts and root == default_data_root()
    assert root.resolve() == (tmp_path / "cwd" / "data").resolve()
    dataset = create_dataset("miniimagenet", "test", image_size=12, cache_dir=cache_dir)
    assert dataset.class_names == ("n1",) and os.path.isabs(dataset.root)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "test").symlink_to(root / "miniimagenet" / "test")
    assert (tmp_path / "elsewhere" / "test" / "n1" / "a.png").is_file()
    monkeypatch.delenv("FEWSHOT_DATA")
    assert data_root_from_env() is None and default_data_root() == (tmp_path / "cwd" / "data").resolve()


@pytest.mark.parametrize("dataset", ["miniimagenet", "omniglot"])
@pytest.mark.parametrize("how", ["root", "env", "default"])
def test_not_found_says_how_to_point_elsewhere_and_what_decided_this_time(dataset, how, tmp_path,
                                                                         monkeypatch, cache_dir):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FEWSHOT_DATA", raising=False)
    root = None
    if how == "root":
        root = tmp_path / "given"
    elif how == "env":
        monkeypatch.setenv("FEWSHOT_DATA", "from-env")
    with pytest.raises(DatasetNotFoundError) as error:
        create_dataset(dataset, "train", root=root, cache_dir=cache_dir)
    message = str(error.value)
    assert "--data-root /path/to/data" in message and "FEWSHOT_DATA=/path/to/data" in message
    decided = {"root": "given explicitly (--data-root / root=)",
               "env": "$FEWSHOT_DATA=from-env decided",
               "default": "$FEWSHOT_DATA is not set, so the default ./data"}[how]
    assert decided in message
    searched = {"root": tmp_path / "given", "env": tmp_path / "from-env", "default": tmp_path / "data"}[how]
    assert f"searched {searched.resolve()}" in message or f"searched {searched}" in message
