"""Episodic few-shot datasets: miniImageNet, Omniglot (with Lake's one-shot benchmark) and a
built-in generated dataset that needs no download.

Example::

    from fewshot_acdc.data import create_dataset, episode_loader, FixedEpisodeSet

    train = create_dataset("builtin", "train", augment=True)         # or "miniimagenet", "omniglot"
    for episode in episode_loader(train, ways=5, shots=1, queries=15, seed=0, num_workers=2):
        episode = episode.to("cuda", non_blocking=True)               # Episode: support/query tensors
        ...
    test = create_dataset("builtin", "test")
    episodes = FixedEpisodeSet.load_or_create(test, 5, 1, 15, episodes=600, seed=0)
    print(episodes.name)                                               # builtin-test-5w1s15q-seed0-<checksum>

Layouts, downloads and split rules: data/README.md.
"""

from .dataset import ArrayDataset, FewShotDataset
from .episodes import Episode, EpisodeIndices, EpisodeLoader, EpisodeSampler, episode_loader
from .errors import (CorruptDataError, DatasetNotFoundError, EpisodeSetMismatchError,
                     ImpossibleEpisodeError, UnsafePickleError)
from .fixed import FixedEpisodeSet
from .omniglot import (AllRunsErrorRate, all_runs_episodes, find_all_runs, load_omniglot_all_runs,
                       omniglot_all_runs_error_rate)
from .registry import DATASETS, SPLITS, create_dataset
from .safe_pickle import safe_load_pickle

__all__ = [
    "AllRunsErrorRate", "ArrayDataset", "CorruptDataError", "DATASETS", "DatasetNotFoundError",
    "Episode", "EpisodeIndices", "EpisodeLoader", "EpisodeSampler", "EpisodeSetMismatchError",
    "FewShotDataset", "FixedEpisodeSet", "ImpossibleEpisodeError", "SPLITS", "UnsafePickleError",
    "all_runs_episodes", "create_dataset", "episode_loader", "find_all_runs", "load_omniglot_all_runs",
    "omniglot_all_runs_error_rate", "safe_load_pickle",
]
