"""A saved evaluation set of episodes, so every model is scored on exactly the same episodes.

The file ``<cache_dir>/episodes/<identifier>-<split>-<N>w<K>s<Q>q-seed<seed>-<digest>.npz`` holds
the episodes as dataset indices (int32 ``support`` [E, N*K], ``query`` [E, N*Q], ``classes`` [E, N])
plus a JSON ``meta`` record with the dataset's fingerprint: checksums of its class list and of its
per-image labels. ``digest`` is a checksum of that fingerprint, so two datasets that differ (e.g.
two data roots, or two layouts listing the classes in another order) get two files, and two
evaluations name the same set only if they indexed the same images. A file that does not match
the dataset anyway (copied or renamed) raises :class:`EpisodeSetMismatchError` instead of
silently scoring a model on different images.

Episode i of the set is episode i of ``EpisodeSampler(dataset, N, K, Q, seed)``, so a set of 600
episodes is the first 600 of a set of 1000, and asking for more episodes than a file holds
extends the file without changing the episodes already in it. Being derived data, a file that
cannot be read (truncated, empty, not an npz) is named in a warning and drawn again: the same
episodes, since they are a function of the sampler's arguments.

:func:`episode_identity` is a short checksum of what defines an episode (its class ids and the
image ids of its support and query sets); eval files list it per episode, so two of them are
paired on the episodes they scored, not on their position alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from .cache import resolve_cache_dir
from .episodes import Episode, EpisodeIndices, EpisodeLoader, EpisodeSampler, build_episode
from .errors import CorruptDataError, EpisodeSetMismatchError

if TYPE_CHECKING:
    from .dataset import FewShotDataset

FORMAT_VERSION = 1


def episode_set_name(identifier: str, split: str, ways: int, shots: int, queries: int, seed: int,
                     digest: str) -> str:
    return f"{identifier}-{split}-{ways}w{shots}s{queries}q-seed{seed}-{digest}"


def episode_identity(indices: EpisodeIndices) -> str:
    """16 hex digits of a sha256 of an episode's class ids (in label order) and the dataset image
    ids of its support and query sets (in order): equal for two episodes exactly when they hold the
    same images under the same labels (of one dataset: the episode set's name checks that)."""
    text = json.dumps({"classes": [int(c) for c in indices.classes], "support": [int(i) for i in indices.support],
                       "query": [int(i) for i in indices.query]}, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def dataset_digest(dataset: "FewShotDataset") -> str:
    """8 hex digits of a checksum of the dataset's fingerprint (classes, labels, split)."""
    text = json.dumps(dataset.fingerprint(), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


class _StoredIndices:
    def __init__(self, support: np.ndarray, query: np.ndarray, classes: np.ndarray):
        self.support, self.query, self.classes = support, query, classes

    def __getitem__(self, episode_index: int) -> EpisodeIndices:
        return EpisodeIndices(self.support[episode_index].astype(np.int64),
                              self.query[episode_index].astype(np.int64),
                              self.classes[episode_index].astype(np.int64))


class FixedEpisodeSet:
    """A fixed list of episodes of one dataset split, stored in a small file and reused.

    Use :meth:`load_or_create`. Iterating yields :class:`Episode` (never augmented);
    ``indices(i)`` gives episode i as :class:`EpisodeIndices`; ``loader(num_workers)`` builds
    episodes in DataLoader workers. ``name`` (e.g. "miniimagenet-test-5w1s15q-seed0-1f2e3d4c")
    identifies the set in evaluation reports: two results with the same name were scored on the
    same episodes.
    """

    def __init__(self, dataset: "FewShotDataset", support: np.ndarray, query: np.ndarray,
                 classes: np.ndarray, *, ways: int, shots: int, queries: int, seed: int,
                 path: Path | None):
        self.dataset = dataset
        self.ways, self.shots, self.queries, self.seed = ways, shots, queries, seed
        self.path = path
        self.name = episode_set_name(dataset.identifier, dataset.split, ways, shots, queries, seed,
                                     dataset_digest(dataset))
        self._stored = _StoredIndices(support, query, classes)

    # ------------------------------------------------------------------ construction
    @classmethod
    def load_or_create(cls, dataset: "FewShotDataset", ways: int, shots: int, queries: int,
                       episodes: int = 600, seed: int = 0,
                       cache_dir: str | os.PathLike | None = None) -> "FixedEpisodeSet":
        """Load ``<cache_dir>/episodes/<name>.npz`` if present (checking it was made from this
        dataset), else draw the episodes and save them. Default cache_dir: see ``cache.py``.

        A file that cannot be read is drawn again (a warning names it). Raises
        EpisodeSetMismatchError (file made from a different class list / labels) or
        ImpossibleEpisodeError (split too small).
        """
        if not isinstance(episodes, (int, np.integer)) or episodes < 1:
            raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
        sampler = EpisodeSampler(dataset, ways, shots, queries, seed)  # validates the request
        name = episode_set_name(dataset.identifier, dataset.split, ways, shots, queries, seed,
                                dataset_digest(dataset))
        path = resolve_cache_dir(cache_dir) / "episodes" / f"{name}.npz"
        stored: list[np.ndarray] | None = None
        if path.exists():
            try:
                stored = cls._read(path, dataset, ways, shots, queries, seed)
            except CorruptDataError as error:
                # Derived data: every run needing this set would fail on it, and drawing it again
                # gives the same episodes.
                warnings.warn(f"{error.path}: {error.problem}; drawing the episode set again (the same "
                              "episodes: they are a function of the sampler's arguments)", stacklevel=2)
                stored = None
            if stored is not None and stored[0].shape[0] >= episodes:
                support, query, classes = (a[:episodes] for a in stored)
                return cls(dataset, support, query, classes, ways=ways, shots=shots,
                           queries=queries, seed=seed, path=path)
        have = 0 if stored is None else stored[0].shape[0]
        drawn = sampler.take(episodes - have, start=have)
        new = [np.stack([getattr(e, f) for e in drawn]).astype(np.int32)
               for f in ("support", "query", "classes")]
        support, query, classes = new if stored is None else [
            np.concatenate([old, add]) for old, add in zip(stored, new)]
        cls._write(path, dataset, support, query, classes, ways, shots, queries, seed)
        return cls(dataset, support, query, classes, ways=ways, shots=shots, queries=queries,
                   seed=seed, path=path)

    @staticmethod
    def _write(path: Path, dataset: "FewShotDataset", support: np.ndarray, query: np.ndarray,
               classes: np.ndarray, ways: int, shots: int, queries: int, seed: int) -> None:
        meta = {
            "format_version": FORMAT_VERSION,
            "ways": ways, "shots": shots, "queries": queries, "seed": seed,
            "episodes": int(support.shape[0]),
            **dataset.fingerprint(),
            "layout": dataset.layout,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, support=support, query=query, classes=classes,
                            meta=np.array(json.dumps(meta, sort_keys=True)))
        os.replace(tmp, path)

    @staticmethod
    def _read(path: Path, dataset: "FewShotDataset", ways: int, shots: int, queries: int,
              seed: int) -> list[np.ndarray]:
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = [data["support"], data["query"], data["classes"]]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            detail = str(exc) or ("an empty file" if path.stat().st_size == 0 else type(exc).__name__)
            raise CorruptDataError(path, f"cannot read episode set ({detail})") from exc
        if not isinstance(meta, dict):
            raise CorruptDataError(path, "the episode set's meta record is not a JSON object")
        expected = {"ways": ways, "shots": shots, "queries": queries, "seed": seed, **dataset.fingerprint()}
        advice = ("The episodes in it index a different set of images, so scores would not be "
                  "comparable. If the dataset changed on purpose, delete the file (or use another "
                  "cache_dir) to draw a new set.")
        for key in ("identifier", "split", "ways", "shots", "queries", "seed", "num_classes",
                    "num_images", "class_list_sha256", "labels_sha256"):
            if meta.get(key) != expected[key]:
                raise EpisodeSetMismatchError(
                    f"{path}: episode set was made from a different dataset: {key} is "
                    f"{meta.get(key)!r} in the file but {expected[key]!r} for the {dataset.split} "
                    f"split of {dataset.identifier} loaded now ({dataset.num_classes} classes, "
                    f"{len(dataset)} images, {dataset.layout}); the file was made from "
                    f"{meta.get('num_classes')} classes, {meta.get('num_images')} images "
                    f"({meta.get('layout', '?')}). {advice}")
        support, query, classes = arrays
        n = support.shape[0]
        if (support.shape != (n, ways * shots) or query.shape != (n, ways * queries)
                or classes.shape != (n, ways) or n == 0):
            raise CorruptDataError(path, "episode arrays have unexpected shapes")
        if max(support.max(), query.max() if query.size else 0) >= len(dataset) or classes.max() >= dataset.num_classes:
            raise CorruptDataError(path, "episode indices out of range for this dataset")
        return arrays

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(self._stored.support.shape[0])

    def identity(self, episode_index: int) -> str:
        """:func:`episode_identity` of episode ``episode_index``."""
        return episode_identity(self.indices(episode_index))

    def identities(self) -> list[tuple[int, str]]:
        """``(index, identity)`` of every episode, in order: what eval files record."""
        return [(i, self.identity(i)) for i in range(len(self))]

    def indices(self, episode_index: int) -> EpisodeIndices:
        if not 0 <= episode_index < len(self):
            raise IndexError(f"episode {episode_index} out of range for {len(self)} episodes")
        return self._stored[episode_index]

    def __getitem__(self, episode_index: int) -> Episode:
        return build_episode(self.dataset, self.indices(episode_index))

    def __iter__(self) -> Iterator[Episode]:
        return (self[i] for i in range(len(self)))

    def loader(self, num_workers: int = 0, pin_memory: bool = False) -> EpisodeLoader:
        """Same episodes as iterating the set, built in ``num_workers`` DataLoader workers."""
        return EpisodeLoader(self.dataset, self._stored, episodes=len(self), start=0,
                             num_workers=num_workers, augment=False, seed=self.seed,
                             pin_memory=pin_memory, prefetch_factor=4)

    def __repr__(self) -> str:
        return f"FixedEpisodeSet({self.name!r}, episodes={len(self)}, path={str(self.path)!r})"
