"""N-way K-shot episodes: the :class:`Episode` tensors, the seeded :class:`EpisodeSampler` and
:func:`episode_loader`.

Reproducibility: episode ``i`` of a sampler with seed ``s`` is a pure function of ``(s, i)``. Its
randomness comes from a PCG64 bit generator seeded with ``SeedSequence([stream, s, i])``, and only
the raw 64-bit outputs are used (numpy guarantees those bit streams; it does not guarantee
``Generator.choice`` across versions), turned into integers with integer arithmetic. Hence the same
seed gives the same episodes on any machine, any numpy version, any number of DataLoader workers,
and after resuming at any episode index. The global numpy/torch/random RNGs are never used.

Drawing rule for episode i (part of the format of saved episode sets, do not change lightly):
``ways`` distinct classes by a partial Fisher-Yates shuffle of the class list (uniform over
classes); then, for each chosen class in that order, ``shots + queries`` distinct images of the
class by a partial Fisher-Yates shuffle of its images (ascending index order); the first
``shots`` are support, the rest query. Episodes are class-major: label ``n`` is the n-th chosen
class and its images are contiguous.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from .errors import ImpossibleEpisodeError

if TYPE_CHECKING:
    from .dataset import FewShotDataset

# Distinct stream ids keep episode sampling and augmentation randomness independent.
_SAMPLER_STREAM = 0x45504953  # "EPIS"
_AUGMENT_STREAM = 0x41554753  # "AUGS"


@dataclass
class Episode:
    """One N-way K-shot Q-query task, ready for a model.

    Attributes:
        support_images: float32 [N*K, C, H, W] from the loaders, normalized with the dataset's
            mean/std (any floating dtype is accepted, e.g. float64 for numerical checks).
        support_labels: int64 [N*K] in 0..N-1; class-major (K images of label 0, then label 1...).
        query_images: [N*Q, C, H, W], same dtype.
        query_labels: int64 [N*Q] in 0..N-1, class-major.
        class_ids: int64 [N] or None: the dataset class id behind each episode label.
    """

    support_images: torch.Tensor
    support_labels: torch.Tensor
    query_images: torch.Tensor
    query_labels: torch.Tensor
    class_ids: torch.Tensor | None = None

    def __post_init__(self) -> None:
        for name in ("support_images", "query_images"):
            value = getattr(self, name)
            if not value.is_floating_point() or value.dim() != 4:
                raise ValueError(f"{name} must be floating point [n, C, H, W], got {value.dtype} {tuple(value.shape)}")
        for name in ("support_labels", "query_labels"):
            value = getattr(self, name)
            if value.dtype != torch.int64 or value.dim() != 1:
                raise ValueError(f"{name} must be int64 [n], got {value.dtype} {tuple(value.shape)}")
        if self.support_images.shape[0] != self.support_labels.shape[0]:
            raise ValueError("support_images and support_labels differ in length")
        if self.query_images.shape[0] != self.query_labels.shape[0]:
            raise ValueError("query_images and query_labels differ in length")
        if self.support_images.shape[1:] != self.query_images.shape[1:]:
            raise ValueError("support and query images differ in shape")
        if self.support_images.dtype != self.query_images.dtype:
            raise ValueError(f"support and query images differ in dtype "
                             f"({self.support_images.dtype} vs {self.query_images.dtype})")

    @property
    def ways(self) -> int:
        return int(self.support_labels.max().item()) + 1 if self.support_labels.numel() else 0

    @property
    def shots(self) -> int:
        return self.support_labels.shape[0] // max(self.ways, 1)

    @property
    def queries(self) -> int:
        return self.query_labels.shape[0] // max(self.ways, 1)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Episode":
        """A copy with every tensor on ``device`` (non_blocking pays off with pinned memory)."""
        move = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Episode(move(self.support_images), move(self.support_labels),
                       move(self.query_images), move(self.query_labels), move(self.class_ids))

    def pin_memory(self) -> "Episode":
        """Page-locked copy; DataLoader(pin_memory=True) calls this."""
        pin = lambda t: None if t is None else t.pin_memory()  # noqa: E731
        return Episode(pin(self.support_images), pin(self.support_labels),
                       pin(self.query_images), pin(self.query_labels), pin(self.class_ids))


@dataclass(frozen=True)
class EpisodeIndices:
    """An episode as dataset indices: what samplers draw and episode files store.

    support: int64 [N*K] image indices; query: int64 [N*Q]; classes: int64 [N] dataset class ids
    (episode label n is ``classes[n]``). Both index arrays are class-major.
    """

    support: np.ndarray
    query: np.ndarray
    classes: np.ndarray

    @property
    def ways(self) -> int:
        return int(self.classes.shape[0])

    def support_labels(self) -> np.ndarray:
        return np.repeat(np.arange(self.ways, dtype=np.int64), self.support.shape[0] // self.ways)

    def query_labels(self) -> np.ndarray:
        return np.repeat(np.arange(self.ways, dtype=np.int64), self.query.shape[0] // self.ways)


class _PortableRandom:
    """Uniform integers from PCG64's raw output: identical on every platform and numpy version."""

    def __init__(self, *key: int):
        self._bits = np.random.PCG64(np.random.SeedSequence(list(key)))

    def sample(self, population: int, k: int) -> list[int]:
        """k distinct values of range(population), by a sparse partial Fisher-Yates shuffle."""
        raw = self._bits.random_raw(k) if k else []
        swapped: dict[int, int] = {}
        picked = []
        for i in range(k):
            # floor(r * m / 2**64) is uniform on 0..m-1 up to a bias of m / 2**64.
            j = i + ((int(raw[i]) * (population - i)) >> 64)
            value_i = swapped.get(i, i)
            value_j = swapped.get(j, j)
            swapped[j] = value_i
            picked.append(value_j)
        return picked


def _check_seed(seed: int) -> int:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_episode_shape(ways: int, shots: int, queries: int) -> None:
    for name, value, low in (("ways", ways, 1), ("shots", shots, 1), ("queries", queries, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


class EpisodeSampler:
    """Draws N-way K-shot Q-query episodes as :class:`EpisodeIndices` from a labelled dataset.

    Args:
        dataset_or_labels: a :class:`FewShotDataset`, or any 1-D sequence of per-image class ids
            (then episode ``classes`` are those label values).
        ways, shots, queries: N, K and Q (queries per class; 0 allowed).
        seed: non-negative integer; episode ``i`` depends only on (seed, i).

    Raises :class:`ImpossibleEpisodeError` (a ValueError) at construction when the split cannot
    supply such episodes: fewer than N classes, or a class with fewer than K + Q images (the
    message names the class and the counts).

    ``sampler[i]`` / ``sampler.sample(i)`` gives episode i; iterating yields episodes 0, 1, ...
    forever.
    """

    def __init__(self, dataset_or_labels: "FewShotDataset | Sequence[int] | np.ndarray",
                 ways: int, shots: int, queries: int, seed: int = 0):
        _check_episode_shape(ways, shots, queries)
        self.ways, self.shots, self.queries = int(ways), int(shots), int(queries)
        self.seed = _check_seed(seed)
        labels = getattr(dataset_or_labels, "labels", None)
        if labels is not None and hasattr(dataset_or_labels, "class_names"):
            dataset = dataset_or_labels
            self._class_ids = np.arange(dataset.num_classes, dtype=np.int64)
            self._members = dataset.class_indices()
            names = list(dataset.class_names)
            where = f"the {dataset.split} split of {dataset.identifier}"
        else:
            labels = np.asarray(dataset_or_labels, dtype=np.int64).reshape(-1)
            self._class_ids, inverse = np.unique(labels, return_inverse=True)
            order = np.argsort(inverse, kind="stable")
            self._members = np.split(order, np.cumsum(np.bincount(inverse))[:-1]) if labels.size else []
            names = [str(c) for c in self._class_ids]
            where = "the given labels"
        self.num_classes = len(self._class_ids)
        self._validate(names, where)

    def _validate(self, names: list[str], where: str) -> None:
        episode = f"{self.ways}-way {self.shots}-shot {self.queries}-query episodes"
        if self.ways > self.num_classes:
            raise ImpossibleEpisodeError(
                f"{episode} need {self.ways} classes, but {where} has only {self.num_classes} classes")
        need = self.shots + self.queries
        counts = np.array([len(m) for m in self._members], dtype=np.int64)
        short = np.flatnonzero(counts < need)
        if short.size:
            short = short[np.argsort(counts[short], kind="stable")]
            first = short[0]
            listed = ", ".join(f"'{names[c]}' ({counts[c]})" for c in short[:5])
            more = f" and {short.size - 5} more" if short.size > 5 else ""
            raise ImpossibleEpisodeError(
                f"{episode} need {need} images per class ({self.shots} support + {self.queries} "
                f"query), but in {where} class '{names[first]}' has only {counts[first]} images; "
                f"{short.size} of {self.num_classes} classes have fewer than {need}: {listed}{more}")

    def sample(self, episode_index: int) -> EpisodeIndices:
        if episode_index < 0:
            raise IndexError(f"episode index must be >= 0, got {episode_index}")
        rng = _PortableRandom(_SAMPLER_STREAM, self.seed, int(episode_index))
        chosen = rng.sample(self.num_classes, self.ways)
        need = self.shots + self.queries
        support = np.empty((self.ways, self.shots), dtype=np.int64)
        query = np.empty((self.ways, self.queries), dtype=np.int64)
        for n, position in enumerate(chosen):
            members = self._members[position]
            picked = members[rng.sample(len(members), need)]
            support[n] = picked[: self.shots]
            query[n] = picked[self.shots:]
        return EpisodeIndices(support.reshape(-1), query.reshape(-1),
                              self._class_ids[np.asarray(chosen, dtype=np.int64)])

    __getitem__ = sample

    def __iter__(self) -> Iterator[EpisodeIndices]:
        return (self.sample(i) for i in itertools.count())

    def take(self, count: int, start: int = 0) -> list[EpisodeIndices]:
        return [self.sample(i) for i in range(start, start + count)]


class _IndexSource(Protocol):
    def __getitem__(self, episode_index: int) -> EpisodeIndices: ...


def augmentation_generator(seed: int, episode_index: int) -> torch.Generator:
    """The torch.Generator that augments episode ``episode_index`` of a loader seeded ``seed``."""
    words = np.random.SeedSequence([_AUGMENT_STREAM, seed, episode_index]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed((int(words[0]) << 31) ^ int(words[1]))


@dataclass
class _PackedEpisode:
    """An episode as uint8 images: what DataLoader workers send (a quarter of the float32 size,
    which makes inter-process transfer, not image work, cheap). ``unpack`` normalizes it."""

    images: torch.Tensor  # uint8 [N*K + N*Q, C, H, W], support first
    support_count: int
    support_labels: torch.Tensor
    query_labels: torch.Tensor
    class_ids: torch.Tensor

    def unpack(self, dataset: "FewShotDataset") -> Episode:
        images = dataset.normalize(self.images)
        return Episode(images[: self.support_count], self.support_labels,
                       images[self.support_count:], self.query_labels, self.class_ids)


def _pack(dataset: "FewShotDataset", indices: EpisodeIndices, augment: bool,
          generator: torch.Generator | None) -> _PackedEpisode:
    # Support and query are read (and augmented) in one batch.
    images = dataset.load_uint8(np.concatenate([indices.support, indices.query]),
                                augment=augment, generator=generator)
    return _PackedEpisode(images, int(indices.support.shape[0]),
                          torch.from_numpy(indices.support_labels()),
                          torch.from_numpy(indices.query_labels()),
                          torch.from_numpy(np.asarray(indices.classes, dtype=np.int64)))


def build_episode(dataset: "FewShotDataset", indices: EpisodeIndices, *, augment: bool = False,
                  generator: torch.Generator | None = None) -> Episode:
    """Load the images of ``indices`` into an :class:`Episode`."""
    return _pack(dataset, indices, augment, generator).unpack(dataset)


class _EpisodeBuilder(TorchDataset):
    """Map-style torch dataset: episode index -> packed episode (what DataLoader workers run)."""

    def __init__(self, dataset: "FewShotDataset", source: _IndexSource, augment: bool, seed: int):
        self.dataset, self.source, self.augment, self.seed = dataset, source, augment, seed

    def __getitem__(self, episode_index: int) -> _PackedEpisode:
        generator = augmentation_generator(self.seed, episode_index) if self.augment else None
        return _pack(self.dataset, self.source[episode_index], self.augment, generator)


class EpisodeLoader:
    """Iterable of :class:`Episode` (see :func:`episode_loader`). Each ``iter()`` starts again at
    episode ``start``; ``len()`` exists only for a finite loader."""

    def __init__(self, dataset: "FewShotDataset", source: _IndexSource, *, episodes: int | None,
                 start: int, num_workers: int, augment: bool, seed: int, pin_memory: bool,
                 prefetch_factor: int, indices: Sequence[int] | None = None):
        if indices is not None:
            # Explicit episode indices (a rank's share of every meta-batch): they replace
            # start/episodes, and each episode is still the pure function of (seed, index).
            episodes, start = len(indices), 0
        self.indices = indices
        if episodes is not None and (not isinstance(episodes, (int, np.integer)) or episodes < 0):
            raise ValueError(f"episodes must be None or a non-negative integer, got {episodes!r}")
        if not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.dataset = dataset
        self.episodes = None if episodes is None else int(episodes)
        self.start = int(start)
        self.num_workers = int(num_workers)
        self.augment = bool(augment)
        self.seed = seed
        self.pin_memory = bool(pin_memory)
        self.prefetch_factor = int(prefetch_factor)
        self._builder = _EpisodeBuilder(dataset, source, self.augment, seed)
        self._dataloader: DataLoader | None = None

    def _indices(self) -> Iterator[int]:
        if self.indices is not None:
            return iter(self.indices)
        if self.episodes is None:
            return itertools.count(self.start)
        return iter(range(self.start, self.start + self.episodes))

    def __len__(self) -> int:
        if self.episodes is None:
            raise TypeError("an infinite episode loader (episodes=None) has no length")
        return self.episodes

    def __iter__(self) -> Iterator[Episode]:
        for packed in self._packed():
            episode = packed.unpack(self.dataset)
            yield episode.pin_memory() if self.pin_memory else episode

    def _packed(self) -> Iterator[_PackedEpisode]:
        if self.num_workers == 0:
            return (self._builder[i] for i in self._indices())
        if self._dataloader is None:
            self._dataloader = DataLoader(
                self._builder,
                batch_size=None,  # one Episode per index; the trainer groups meta-batches
                sampler=_RestartableIndices(self),
                num_workers=self.num_workers,
                prefetch_factor=self.prefetch_factor,
                # Workers end with each pass: persistent workers would outlive the loop and make
                # interpreter exit wait on them; starting them costs well under a second.
                persistent_workers=False,
            )
        # DataLoader keeps the sampler's order, so worker count never changes the sequence. The
        # float episode is made (and pinned) here, after the compact uint8 transfer.
        return iter(self._dataloader)


class _RestartableIndices:
    def __init__(self, loader: EpisodeLoader):
        self._loader = loader

    def __iter__(self) -> Iterator[int]:
        return self._loader._indices()


def episode_loader(
    dataset: "FewShotDataset",
    ways: int,
    shots: int,
    queries: int,
    seed: int = 0,
    episodes: int | None = None,
    num_workers: int = 0,
    augment: bool | None = None,
    *,
    start: int = 0,
    pin_memory: bool = False,
    prefetch_factor: int = 4,
    indices: Sequence[int] | None = None,
) -> EpisodeLoader:
    """Episodes of ``dataset`` as :class:`Episode` tensors, episode ``start``, ``start + 1``, ...

    Args:
        episodes: how many; None for an infinite stream (training).
        num_workers: >0 builds episodes in torch DataLoader worker processes; the sequence is
            identical for every worker count (episode i depends only on (seed, i)).
        augment: training augmentation; None uses the dataset's ``augment`` setting. Augmentation
            randomness is also a function of (seed, i).
        start: first episode index (resume training at iteration * meta_batch_size).
        pin_memory: pin tensors for fast ``episode.to("cuda", non_blocking=True)``.
        indices: the episode indices to build, in this order, instead of ``start``/``episodes``
            (a data-parallel rank builds only its share of each meta-batch).

    Raises :class:`ImpossibleEpisodeError` immediately (not at first iteration) if the split
    cannot supply such episodes.
    """
    sampler = EpisodeSampler(dataset, ways, shots, queries, seed)
    return EpisodeLoader(dataset, sampler, episodes=episodes, start=start, num_workers=num_workers,
                         augment=dataset.augment if augment is None else augment, seed=sampler.seed,
                         pin_memory=pin_memory, prefetch_factor=prefetch_factor, indices=indices)
