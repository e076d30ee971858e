"""Glue between a :class:`~fewshot_acdc.config.TrainConfig` and :mod:`fewshot_acdc.data`."""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Iterator, List, Optional, Tuple

import torch

from ..config import TrainConfig
from ..data import FixedEpisodeSet, create_dataset, episode_loader


def open_split(config: TrainConfig, split: str):
    """One split of the configured dataset.

    The dataset's own seed stays 0 whatever the run's seed: for the built-in dataset it selects
    the generated world, and runs that differ only in seed must see the same classes (and the
    same saved evaluation episodes) to be comparable.
    """
    options = ({"rotations": config.rotations, "background": config.omniglot_background}
               if config.dataset == "omniglot" else {})
    return create_dataset(config.dataset, split, root=config.data_root, image_size=config.image_size,
                          augment=config.augment and split == "train", seed=0, **options)


def training_batches(config: TrainConfig, dataset, start_iteration: int, device: torch.device,
                     share: Optional[range] = None) -> Iterator[Tuple[int, List]]:
    """``(iteration, [meta_batch episodes on device])`` for iterations ``start_iteration + 1 ...``.

    Episode ``i`` of the stream depends only on ``(seed, i)``, and iteration ``t`` uses episodes
    ``(t - 1) * meta_batch ... t * meta_batch - 1``, so a resumed run sees the same tasks.
    ``share`` (positions within the meta-batch, e.g. ``range(2, 4)``): build only those tasks of
    every meta-batch, what one data-parallel rank trains on; the other tasks are never loaded.
    """
    remaining = config.iterations - start_iteration
    if remaining <= 0:
        return
    if share is None or share == range(config.meta_batch):
        loader = episode_loader(dataset, config.ways, config.shots, config.queries, seed=config.seed,
                                episodes=remaining * config.meta_batch, num_workers=config.num_workers,
                                start=start_iteration * config.meta_batch, pin_memory=device.type == "cuda")
        per_iteration = config.meta_batch
    else:
        loader = episode_loader(dataset, config.ways, config.shots, config.queries, seed=config.seed,
                                num_workers=config.num_workers, pin_memory=device.type == "cuda",
                                indices=ShareIndices(config.meta_batch, share, start_iteration, remaining))
        per_iteration = len(share)
    stream = iter(loader)
    for iteration in range(start_iteration + 1, config.iterations + 1):
        batch = list(itertools.islice(stream, per_iteration))
        yield iteration, [episode.to(device, non_blocking=True) for episode in batch]


class ShareIndices(Sequence):
    """The stream indices of the ``share`` positions of each meta-batch, iteration after iteration
    (``iterations`` of them from ``start_iteration + 1``), computed on demand rather than listed."""

    def __init__(self, meta_batch: int, share: range, start_iteration: int, iterations: int) -> None:
        self.meta_batch, self.share, self.start_iteration, self.iterations = meta_batch, share, start_iteration, iterations

    def __len__(self) -> int:
        return self.iterations * len(self.share)

    def __getitem__(self, position: int) -> int:
        if not 0 <= position < len(self):
            raise IndexError(position)
        iteration, task = divmod(position, len(self.share))
        return (self.start_iteration + iteration) * self.meta_batch + self.share[task]


def evaluation_episodes(config: TrainConfig, dataset, ways: int, shots: int, episodes: int,
                        split: str = "val") -> FixedEpisodeSet:
    """The saved, shared episode set for ``dataset`` (same file for every model: paired results).

    Its seed is fixed (0), not the run's seed: runs with different seeds must still be scored
    on the same episodes.
    """
    return FixedEpisodeSet.load_or_create(dataset, ways, shots, config.queries_eval, episodes=episodes,
                                          seed=0, cache_dir=config.episode_dir)
