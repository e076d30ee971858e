"""Specification of FixedEpisodeSet: a saved evaluation set, reused so results can be paired."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fewshot_acdc.data import (ArrayDataset, EpisodeSampler, EpisodeSetMismatchError,
                               FixedEpisodeSet, ImpossibleEpisodeError)
from fewshot_acdc.data import fixed as fixed_module

from .conftest import class_image


def dataset(classes: int = 10, per_class: int = 8, names: list[str] | None = None, augment: bool = False,
            identifier: str = "tiny") -> ArrayDataset:
    images = np.stack([class_image(c, i) for c in range(classes) for i in range(per_class)])
    return ArrayDataset(images, np.repeat(np.arange(classes), per_class),
                        names or [f"c{c}" for c in range(classes)], name="tiny", identifier=identifier,
                        split="test", mean=(0.5,) * 3, std=(0.5,) * 3, augment=augment)


def test_the_set_is_saved_under_a_name_keyed_by_dataset_split_shape_seed_and_checksum(cache_dir):
    digest = fixed_module.dataset_digest(dataset())
    assert len(digest) == 8
    episodes = FixedEpisodeSet.load_or_create(dataset(), 5, 1, 3, episodes=20, seed=0, cache_dir=cache_dir)
    assert episodes.name == f"tiny-test-5w1s3q-seed0-{digest}"
    assert episodes.path == cache_dir / "episodes" / f"tiny-test-5w1s3q-seed0-{digest}.npz"
    assert episodes.path.exists() and len(episodes) == 20
    other = FixedEpisodeSet.load_or_create(dataset(), 5, 2, 3, episodes=20, seed=1, cache_dir=cache_dir)
    assert other.path.name == f"tiny-test-5w2s3q-seed1-{digest}.npz"


def test_datasets_that_differ_under_one_identifier_get_their_own_sets_in_one_cache(cache_dir):
    # Issue 16: a second data root (same identifier, other images per class) failed with "episode
    # set was made from a different dataset" until it was given its own --episode-dir.
    first = FixedEpisodeSet.load_or_create(dataset(per_class=8), 5, 1, 2, episodes=10, seed=0, cache_dir=cache_dir)
    second = FixedEpisodeSet.load_or_create(dataset(per_class=9), 5, 1, 2, episodes=10, seed=0, cache_dir=cache_dir)
    assert first.path != second.path and first.name != second.name  # never paired as the same episodes
    again = FixedEpisodeSet.load_or_create(dataset(per_class=8), 5, 1, 2, episodes=10, seed=0, cache_dir=cache_dir)
    assert again.path == first.path
    assert all(np.array_equal(first.indices(i).support, again.indices(i).support) for i in range(10))


def test_the_saved_file_is_reused_not_redrawn(cache_dir, monkeypatch):
    first = FixedEpisodeSet.load_or_create(dataset(), 4, 2, 2, episodes=15, seed=3, cache_dir=cache_dir)

    def no_drawing(self, *args, **kwargs):
        raise AssertionError("episodes were drawn again instead of read from the file")

    monkeypatch.setattr(EpisodeSampler, "take", no_drawing)
    second = FixedEpisodeSet.load_or_create(dataset(), 4, 2, 2, episodes=15, seed=3, cache_dir=cache_dir)
    for i in range(15):
        assert np.array_equal(first.indices(i).support, second.indices(i).support)
        assert np.array_equal(first.indices(i).query, second.indices(i).query)


def test_the_set_holds_the_sampler_episodes_and_yields_their_images(cache_dir):
    data = dataset()
    episodes = FixedEpisodeSet.load_or_create(data, 3, 2, 4, episodes=6, seed=5, cache_dir=cache_dir)
    sampler = EpisodeSampler(data, 3, 2, 4, seed=5)
    for i, episode in enumerate(episodes):
        assert np.array_equal(episodes.indices(i).support, sampler[i].support)
        expected = (torch.from_numpy(data.get_images(sampler[i].query)).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
        torch.testing.assert_close(episode.query_images, expected)
        assert episode.query_labels.tolist() == [n for n in range(3) for _ in range(4)]


def test_asking_for_more_episodes_extends_the_file_without_changing_existing_ones(cache_dir):
    small = FixedEpisodeSet.load_or_create(dataset(), 5, 1, 2, episodes=10, seed=0, cache_dir=cache_dir)
    large = FixedEpisodeSet.load_or_create(dataset(), 5, 1, 2, episodes=25, seed=0, cache_dir=cache_dir)
    fewer = FixedEpisodeSet.load_or_create(dataset(), 5, 1, 2, episodes=4, seed=0, cache_dir=cache_dir)
    assert (len(small), len(large), len(fewer)) == (10, 25, 4)
    for i in range(10):
        assert np.array_equal(small.indices(i).support, large.indices(i).support)
    for i in range(4):
        assert np.array_equal(fewer.indices(i).query, large.indices(i).query)


def _copied_over(source: FixedEpisodeSet, target_dataset: ArrayDataset, cache_dir) -> str:
    """Put ``source``'s file where ``target_dataset``'s set would be (a copied or renamed file)."""
    digest = fixed_module.dataset_digest(target_dataset)
    target = cache_dir / "episodes" / f"tiny-test-5w1s2q-seed0-{digest}.npz"
    target.write_bytes(source.path.read_bytes())
    return target.name


def test_a_set_made_from_another_class_list_is_detected(cache_dir):
    made = FixedEpisodeSet.load_or_create(dataset(), 5, 1, 2, episodes=10, seed=0, cache_dir=cache_dir)
    renamed = dataset(names=[f"other{c}" for c in range(10)])
    name = _copied_over(made, renamed, cache_dir)
    with pytest.raises(EpisodeSetMismatchError) as error:
        FixedEpisodeSet.load_or_create(renamed, 5, 1, 2, episodes=10, seed=0, cache_dir=cache_dir)
    message = str(error.value)
    assert name in message and "class_list_sha256" in message
    assert "delete the file" in message


def test_a_set_made_from_other_images_per_class_is_detected(cache_dir):
    made = FixedEpisodeSet.load_or_create(dataset(per_class=8), 5, 1, 2, episodes=10, seed=0, cache_dir=cache_dir)
    _copied_over(made, dataset(per_class=9), cache_dir)
    with pytest.raises(EpisodeSetMismatchError, match="num_images"):
        FixedEpisodeSet.load_or_create(dataset(per_class=9), 5, 1, 2, episodes=10, seed=0, cache_dir=cache_dir)


@pytest.mark.parametrize("damage", ["text", "empty", "truncated", "random bytes", "no meta"])
def test_an_unreadable_file_is_named_and_drawn_again_with_the_same_episodes(cache_dir, damage):
    # Derived data in a shared cache: one damaged file must not break every run that needs it.
    episodes = FixedEpisodeSet.load_or_create(dataset(), 5, 1, 2, episodes=10, seed=0, cache_dir=cache_dir)
    whole = episodes.path.read_bytes()
    damaged = {"text": b"not an npz", "empty": b"", "truncated": whole[:len(whole) // 2],
               "random bytes": np.random.default_rng(0).bytes(len(whole)), "no meta": None}[damage]
    if damaged is None:
        np.savez(episodes.path, support=np.zeros((10, 5), np.int32))
    else:
        episodes.path.write_bytes(damaged)
    with pytest.warns(UserWarning, match=f"tiny-test-5w1s2q-seed0-{fixed_module.dataset_digest(dataset())}.npz: "
                                         "(cannot read|episode arrays).*drawing the episode set again"):
        again = FixedEpisodeSet.load_or_create(dataset(), 5, 1, 2, episodes=10, seed=0, cache_dir=cache_dir)
    assert again.identities() == episodes.identities()
    assert FixedEpisodeSet.load_or_create(dataset(), 5, 1, 2, episodes=10, seed=0, cache_dir=cache_dir).identities() \
        == episodes.identities()  # and the file was written back whole


def test_episode_identity_is_a_checksum_of_classes_and_image_ids(cache_dir):
    episodes = FixedEpisodeSet.load_or_create(dataset(), 5, 1, 2, episodes=10, seed=0, cache_dir=cache_dir)
    identities = episodes.identities()
    assert [index for index, _ in identities] == list(range(10))
    assert len({digest for _, digest in identities}) == 10 and all(len(d) == 16 for _, d in identities)
    first = episodes.indices(0)
    assert fixed_module.episode_identity(first) == identities[0][1]
    swapped = type(first)(first.support, first.query[::-1].copy(), first.classes)
    assert fixed_module.episode_identity(swapped) != identities[0][1]  # other queries, other episode


def test_impossible_sets_are_refused_before_anything_is_written(cache_dir):
    with pytest.raises(ImpossibleEpisodeError):
        FixedEpisodeSet.load_or_create(dataset(per_class=4), 5, 1, 15, episodes=10, cache_dir=cache_dir)
    assert not (cache_dir / "episodes").exists()


def test_evaluation_episodes_are_never_augmented_and_workers_give_the_same_episodes(cache_dir):
    augmenting = dataset(augment=True)
    episodes = FixedEpisodeSet.load_or_create(augmenting, 2, 1, 1, episodes=4, seed=0, cache_dir=cache_dir)
    plain = FixedEpisodeSet.load_or_create(dataset(), 2, 1, 1, episodes=4, seed=0, cache_dir=cache_dir)
    in_workers = list(episodes.loader(num_workers=2))
    for a, b, c in zip(episodes, plain, in_workers, strict=True):
        assert torch.equal(a.support_images, b.support_images) and torch.equal(a.support_images, c.support_images)


def test_the_file_is_small(cache_dir):
    episodes = FixedEpisodeSet.load_or_create(dataset(classes=30, per_class=20), 5, 1, 15, episodes=600,
                                              seed=0, cache_dir=cache_dir)
    assert episodes.path.stat().st_size < 200_000
    assert fixed_module.FORMAT_VERSION == 1
