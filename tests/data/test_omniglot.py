"""Specification of the Omniglot loader, its split rule, rotations, and Lake's all_runs benchmark."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fewshot_acdc.data import (CorruptDataError, DatasetNotFoundError, all_runs_episodes, create_dataset,
                               load_omniglot_all_runs, omniglot_all_runs_error_rate)
from fewshot_acdc.data.omniglot import OMNIGLOT_MEAN, OMNIGLOT_STD

from .conftest import glyph, glyph_png, require, write_omniglot_zip

# Two minimal sets sharing an identical alphabet, as Lake's small1/small2 share Greek and Latin.
SMALL1 = {"Alpha": 3, "Beta": 2, "Gamma": 2, "Latin": 3}
SMALL2 = {"Delta": 2, "Latin": 3, "Omega": 2}
# Sorted union: Alpha, Beta, Delta, Gamma, Latin, Omega -> i % 4 == 2 val, == 3 test, else train.
EXPECTED_SMALL_SPLITS = {"train": {"Alpha": 3, "Beta": 2, "Latin": 3, "Omega": 2},
                         "val": {"Delta": 2}, "test": {"Gamma": 2}}
DRAWINGS = 4


@pytest.fixture
def small_root(tmp_path: Path) -> Path:
    root = tmp_path / "omniglot"
    write_omniglot_zip(root / "images_background_small1.zip", "images_background_small1", SMALL1, DRAWINGS)
    write_omniglot_zip(root / "images_background_small2.zip", "images_background_small2", SMALL2, DRAWINGS)
    return root


def alphabet_counts(dataset) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in dataset.class_names:
        counts[name.split("/")[0]] = counts.get(name.split("/")[0], 0) + 1
    return counts


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_small_sets_are_pooled_deduplicated_and_split_by_alphabet(small_root, cache_dir, split):
    dataset = create_dataset("omniglot", split, root=small_root, rotations=False, cache_dir=cache_dir)
    assert alphabet_counts(dataset) == EXPECTED_SMALL_SPLITS[split]
    assert set(dataset.class_counts().tolist()) == {DRAWINGS}
    assert dataset.identifier == "omniglot-norot"


def test_full_background_and_evaluation_sets_use_lakes_protocol(tmp_path, cache_dir):
    root = tmp_path / "omniglot"
    write_omniglot_zip(root / "images_background.zip", "images_background", {"B1": 2, "B2": 3, "B3": 2})
    write_omniglot_zip(root / "images_evaluation.zip", "images_evaluation", {"E1": 2, "E2": 2, "E3": 3, "E4": 2})
    write_omniglot_zip(root / "images_background_small1.zip", "images_background_small1", {"B1": 2})
    splits = {s: alphabet_counts(create_dataset("omniglot", s, root=root, rotations=False, cache_dir=cache_dir))
              for s in ("train", "val", "test")}
    assert splits == {"train": {"B1": 2, "B2": 3, "B3": 2}, "val": {"E1": 2, "E3": 3}, "test": {"E2": 2, "E4": 2}}


@pytest.mark.parametrize("background, alphabets", [("small1", SMALL1), ("small2", SMALL2)])
def test_one_minimal_set_alone_trains_on_all_alphabets_but_the_third_and_has_no_test_split(
        small_root, cache_dir, background, alphabets):
    # Lake's minimal setting: nothing from the other set; the third alphabet (sorted) validates.
    names = sorted(alphabets)
    train = create_dataset("omniglot", "train", root=small_root, rotations=False, background=background,
                           cache_dir=cache_dir)
    val = create_dataset("omniglot", "val", root=small_root, rotations=False, background=background,
                         cache_dir=cache_dir)
    assert alphabet_counts(val) == {names[2]: alphabets[names[2]]}
    assert alphabet_counts(train) == {a: n for a, n in alphabets.items() if a != names[2]}
    with pytest.raises(DatasetNotFoundError, match=r"no test split.*all_runs.*--benchmark omniglot-all-runs"):
        create_dataset("omniglot", "test", root=small_root, background=background, cache_dir=cache_dir)


def test_a_minimal_set_that_is_not_there_or_an_unknown_background_is_a_clear_error(tmp_path, cache_dir):
    root = tmp_path / "omniglot"
    write_omniglot_zip(root / "images_background_small1.zip", "images_background_small1", SMALL1, DRAWINGS)
    with pytest.raises(DatasetNotFoundError, match=r"images_background_small2\[\.zip\].*holds images_background_small1.zip"):
        create_dataset("omniglot", "train", root=root, background="small2", cache_dir=cache_dir)
    with pytest.raises(ValueError, match=r"'smal1'.*small1"):
        create_dataset("omniglot", "train", root=root, background="smal1", cache_dir=cache_dir)


def test_unzipped_folders_and_torchvision_layout_read_the_same_images(small_root, tmp_path, cache_dir):
    zipped = create_dataset("omniglot", "train", root=small_root, rotations=False, cache_dir=cache_dir)
    unzipped = tmp_path / "data" / "omniglot-py"
    for name in ("images_background_small1", "images_background_small2"):
        with zipfile.ZipFile(small_root / f"{name}.zip") as archive:
            archive.extractall(unzipped)
    # root is the parent: the loader also looks in <root>/omniglot-py like torchvision does.
    folders = create_dataset("omniglot", "train", root=tmp_path / "data", rotations=False, cache_dir=cache_dir)
    assert folders.class_names == zipped.class_names
    assert np.array_equal(folders.images, zipped.images)


def test_images_are_28px_single_channel_with_strokes_bright_on_black(small_root, cache_dir):
    dataset = create_dataset("omniglot", "val", root=small_root, rotations=False, cache_dir=cache_dir)
    assert dataset.images.shape[1:] == (28, 28, 1) and dataset.channels == 1 and dataset.image_size == 28
    assert dataset.mean == OMNIGLOT_MEAN and dataset.std == OMNIGLOT_STD
    big = create_dataset("omniglot", "val", root=small_root, rotations=False, image_size=105, cache_dir=cache_dir)
    # At full size no resampling happens: pixels are exactly the inverted drawing.
    drawing = big.images[0, :, :, 0]
    assert set(np.unique(drawing).tolist()) <= {0, 255}
    ink = drawing == 255
    assert 0.01 < ink.mean() < 0.3, "strokes (a minority of pixels) must be the bright ones"


def test_rotations_add_three_rotated_classes_per_character(small_root, cache_dir):
    plain = create_dataset("omniglot", "test", root=small_root, rotations=False, cache_dir=cache_dir)
    rotated = create_dataset("omniglot", "test", root=small_root, cache_dir=cache_dir)  # default True
    assert rotated.num_classes == 4 * plain.num_classes and len(rotated) == 4 * len(plain)
    assert rotated.identifier == "omniglot"
    assert rotated.class_names[:4] == tuple(f"{plain.class_names[0]}/rot{d:03d}" for d in (0, 90, 180, 270))
    base = plain.get_images(plain.class_indices()[0])
    for turns in range(4):
        images = rotated.get_images(rotated.class_indices()[turns])
        assert np.array_equal(images, np.rot90(base, k=turns, axes=(1, 2)))


def test_missing_root_names_layouts_and_where_to_get_omniglot(tmp_path, cache_dir):
    with pytest.raises(DatasetNotFoundError) as error:
        create_dataset("omniglot", "train", root=tmp_path / "empty", cache_dir=cache_dir)
    message = str(error.value)
    for expected in ("images_background", "images_evaluation", "images_background_small1",
                     "github.com/brendenlake/omniglot", "--dataset builtin", str(tmp_path / "empty")):
        assert expected in message


def test_a_corrupt_png_inside_the_zip_names_archive_and_member(tmp_path, cache_dir):
    root = tmp_path / "omniglot"
    write_omniglot_zip(root / "images_background_small1.zip", "images_background_small1", SMALL1, DRAWINGS)
    with zipfile.ZipFile(root / "images_background_small1.zip", "a") as archive:
        archive.writestr("images_background_small1/Alpha/character01/zz_99.png", glyph_png(1)[:50])
    with pytest.raises(CorruptDataError, match=r"images_background_small1.zip:images_background_small1/Alpha/character01/zz_99.png"):
        create_dataset("omniglot", "train", root=root, cache_dir=cache_dir)


# ----------------------------------------------------------------------------- all_runs
def write_all_runs(path: Path, runs: int = 3, ways: int = 4) -> list[list[int]]:
    """A small all_runs.zip. A test item is the very drawing of its class, so a correct label
    mapping can be checked pixel for pixel. Returns each run's answers (class index per item)."""
    answers = []
    with zipfile.ZipFile(path, "w") as archive:
        for r in range(1, runs + 1):
            permutation = np.random.default_rng(r).permutation(ways).tolist()
            answers.append(permutation)
            lines = []
            for c in range(ways):
                archive.writestr(f"run{r:02d}/training/class{c + 1:02d}.png", glyph_png(100 * r + c))
            for item, c in enumerate(permutation, start=1):
                archive.writestr(f"run{r:02d}/test/item{item:02d}.png", glyph_png(100 * r + c))
                lines.append(f"run{r:02d}/test/item{item:02d}.png run{r:02d}/training/class{c + 1:02d}.png")
            archive.writestr(f"run{r:02d}/class_labels.txt", "\n".join(lines) + "\n")
    return answers


def test_all_runs_are_episodes_labelled_by_class_labels_txt(tmp_path):
    answers = write_all_runs(tmp_path / "all_runs.zip")
    runs = load_omniglot_all_runs(tmp_path / "all_runs.zip")
    assert len(runs) == 3
    for run, answer in zip(runs, answers):
        assert run.support_images.shape == (4, 1, 28, 28) and run.query_images.shape == (4, 1, 28, 28)
        assert run.support_labels.tolist() == [0, 1, 2, 3]
        assert run.query_labels.tolist() == answer
        assert torch.equal(run.query_images, run.support_images[run.query_labels])


def test_all_runs_images_are_inverted_and_normalized_like_the_splits(tmp_path):
    write_all_runs(tmp_path / "all_runs.zip", runs=1)
    run = load_omniglot_all_runs(tmp_path / "all_runs.zip", image_size=105)[0]
    pixels = run.support_images[0, 0] * OMNIGLOT_STD[0] + OMNIGLOT_MEAN[0]
    expected = torch.from_numpy(~glyph(100).astype(bool)).float()
    torch.testing.assert_close(pixels, expected, atol=1e-5, rtol=0)


def test_all_runs_accepts_an_unzipped_folder(tmp_path):
    write_all_runs(tmp_path / "all_runs.zip")
    with zipfile.ZipFile(tmp_path / "all_runs.zip") as archive:
        archive.extractall(tmp_path / "unzipped")
    from_zip = load_omniglot_all_runs(tmp_path / "all_runs.zip")
    from_folder = load_omniglot_all_runs(tmp_path / "unzipped")
    for a, b in zip(from_zip, from_folder, strict=True):
        assert torch.equal(a.query_images, b.query_images) and torch.equal(a.query_labels, b.query_labels)


def test_error_rate_is_the_mean_over_runs_of_the_fraction_misclassified(tmp_path):
    write_all_runs(tmp_path / "all_runs.zip")
    runs = load_omniglot_all_runs(tmp_path / "all_runs.zip")
    perfect = [run.query_labels.clone() for run in runs]
    assert omniglot_all_runs_error_rate(perfect, runs).error_rate == 0.0
    one_wrong_in_run_1 = [p.clone() for p in perfect]
    one_wrong_in_run_1[0][0] = (one_wrong_in_run_1[0][0] + 1) % 4
    score = omniglot_all_runs_error_rate(one_wrong_in_run_1, runs)
    assert score.per_run_error_rate == [0.25, 0.0, 0.0]
    assert score.error_rate == pytest.approx(0.25 / 3)
    scores = [torch.nn.functional.one_hot(p, 4).float() for p in perfect]  # [20, 20]-style scores
    assert omniglot_all_runs_error_rate(scores, runs).error_rate == 0.0
    with pytest.raises(ValueError):
        omniglot_all_runs_error_rate(perfect[:2], runs)


def test_five_way_episodes_come_from_within_one_run(tmp_path):
    write_all_runs(tmp_path / "all_runs.zip", runs=3, ways=6)
    runs = load_omniglot_all_runs(tmp_path / "all_runs.zip")
    episodes = all_runs_episodes(runs, ways=5, episodes_per_run=4, seed=0)
    assert len(episodes) == 12
    for e, episode in enumerate(episodes):
        run = runs[e % 3]
        assert episode.support_images.shape == (5, 1, 28, 28) and episode.query_labels.tolist() == [0, 1, 2, 3, 4]
        assert torch.equal(episode.support_images, run.support_images[episode.class_ids])
        assert torch.equal(episode.query_images, episode.support_images)  # synthetic: same drawing
    again = all_runs_episodes(runs, ways=5, episodes_per_run=4, seed=0)
    assert all(torch.equal(a.class_ids, b.class_ids) for a, b in zip(episodes, again))
    assert any(not torch.equal(a.class_ids, b.class_ids)
               for a, b in zip(episodes, all_runs_episodes(runs, ways=5, episodes_per_run=4, seed=1)))


def test_missing_all_runs_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="all_runs"):
        load_omniglot_all_runs(tmp_path)


# ----------------------------------------------------------------------------- real data
@pytest.mark.real_data
def test_real_small_background_sets(real_data, cache_dir):
    root = require(real_data / "omniglot")
    require(root / "images_background_small1.zip")
    require(root / "images_background_small2.zip")
    splits = {s: create_dataset("omniglot", s, root=root, rotations=False, cache_dir=cache_dir)
              for s in ("train", "val", "test")}
    assert {s: d.num_classes for s, d in splits.items()} == {"train": 112, "val": 66, "test": 64}
    assert {s: sorted(alphabet_counts(d)) for s, d in splits.items()} == {
        "train": ["Balinese", "Early_Aramaic", "Korean", "Latin"], "val": ["Greek", "Sanskrit"],
        "test": ["Japanese_(katakana)", "Tagalog"]}
    for dataset in splits.values():
        assert set(dataset.class_counts().tolist()) == {20}
        assert dataset.images.shape[1:] == (28, 28, 1)
    rotated = create_dataset("omniglot", "train", root=root, cache_dir=cache_dir)
    assert rotated.num_classes == 448 and len(rotated) == 448 * 20
    ink = splits["train"].images.mean() / 255
    assert abs(ink - OMNIGLOT_MEAN[0]) < 0.02, "normalization constants match the data"


@pytest.mark.real_data
@pytest.mark.parametrize("background, train_alphabets, val_alphabet", [
    ("small1", ["Balinese", "Early_Aramaic", "Korean", "Latin"], "Greek"),
    ("small2", ["Greek", "Japanese_(katakana)", "Sanskrit", "Tagalog"], "Latin")])
def test_real_minimal_sets_alone(real_data, cache_dir, background, train_alphabets, val_alphabet):
    root = require(real_data / "omniglot" / f"images_background_{background}.zip").parent
    train, val = (create_dataset("omniglot", s, root=root, rotations=False, background=background, cache_dir=cache_dir)
                  for s in ("train", "val"))
    assert sorted(alphabet_counts(train)) == train_alphabets and sorted(alphabet_counts(val)) == [val_alphabet]


@pytest.mark.real_data
def test_real_all_runs_has_20_runs_of_20_plus_20_images(real_data):
    runs = load_omniglot_all_runs(require(real_data / "omniglot" / "all_runs.zip"))
    assert len(runs) == 20
    for run in runs:
        assert run.support_images.shape == (20, 1, 28, 28) and run.query_images.shape == (20, 1, 28, 28)
        assert run.support_labels.tolist() == list(range(20))
        assert sorted(run.query_labels.tolist()) == list(range(20)), "each class has one test image"
    # Same inversion as the background sets: mostly-zero background, bright strokes.
    raw = torch.cat([r.query_images for r in runs]) * OMNIGLOT_STD[0] + OMNIGLOT_MEAN[0]
    assert abs(raw.mean().item() - OMNIGLOT_MEAN[0]) < 0.03 and raw.median().item() < 0.05


@pytest.mark.real_data
@pytest.mark.slow
def test_real_all_runs_reproduces_lakes_modified_hausdorff_baseline(real_data):
    """Lake's demo_classification.py: Modified Hausdorff Distance on the ink pixels gives 38.8%
    error. Reproducing it checks the run parsing, the labels and the pixel convention together."""
    from scipy.spatial import cKDTree

    runs = load_omniglot_all_runs(require(real_data / "omniglot" / "all_runs.zip"), image_size=105)

    def ink_points(image: torch.Tensor) -> np.ndarray:
        ink = (image[0] * OMNIGLOT_STD[0] + OMNIGLOT_MEAN[0]).numpy() > 0.5
        points = np.argwhere(ink).astype(float)
        return points - points.mean(axis=0)

    predictions = []
    for run in runs:
        train = [ink_points(x) for x in run.support_images]
        test = [ink_points(x) for x in run.query_images]
        train_trees, test_trees = [cKDTree(p) for p in train], [cKDTree(p) for p in test]
        cost = np.array([[max(train_trees[j].query(test[i])[0].mean(), test_trees[i].query(train[j])[0].mean())
                          for j in range(len(train))] for i in range(len(test))])
        predictions.append(cost.argmin(axis=1))
    assert omniglot_all_runs_error_rate(predictions, runs).error_rate == pytest.approx(0.388, abs=0.005)
