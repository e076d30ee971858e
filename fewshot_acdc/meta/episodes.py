"""Episode validation: cheap shape/dtype checks per call, label ranges checked where labels live.

An episode is any object with ``support_images`` ``[N*K, C, H, W]`` (floating point),
``support_labels`` ``[N*K]`` (integer, in ``0..N-1``), ``query_images`` and ``query_labels``
(same rules, same ``C, H, W``), such as :class:`fewshot_acdc.data.Episode`.

Why the label range is checked before the inner loop: on CUDA an out-of-range target makes
``cross_entropy`` trip a device-side assert, which poisons the whole CUDA context instead of
raising a catchable error. Labels usually come from a data loader on the CPU, where the check
costs no device synchronisation; labels already on the accelerator are checked with one
synchronisation for the whole meta-batch.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from ..data.episodes import Episode
from .errors import EpisodeError

FIELDS = ("support_images", "support_labels", "query_images", "query_labels")


def _check_set(images: object, labels: object, which: str, task: Optional[int]) -> None:
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise EpisodeError(
            f"{which}_images and {which}_labels must be tensors, got "
            f"{type(images).__name__} and {type(labels).__name__}", task)
    if images.dim() != 4:
        raise EpisodeError(f"{which}_images must be [examples, channels, height, width], got shape "
                           f"{tuple(images.shape)}", task)
    if images.shape[0] == 0:
        raise EpisodeError(f"empty {which} set (0 images)", task)
    if not images.is_floating_point():
        raise EpisodeError(f"{which}_images must be floating point (normalized images), got {images.dtype}", task)
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise EpisodeError(f"{which}_labels must be one label per image: shape ({images.shape[0]},) for "
                           f"{images.shape[0]} images, got {tuple(labels.shape)}", task)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise EpisodeError(f"{which}_labels must be integer class indices (int64), got {labels.dtype}", task)


def check_support_set(images: object, labels: object) -> None:
    """Shapes and dtypes of a support set alone (what :meth:`MAML.adapt` receives)."""
    _check_set(images, labels, "support", None)


def check_episode_shapes(episode: object, task: Optional[int] = None) -> None:
    """Shapes and dtypes only: no data is read, so no device synchronisation."""
    missing = [field for field in FIELDS if not hasattr(episode, field)]
    if missing:
        raise EpisodeError(f"{type(episode).__name__} has no {', '.join(missing)} "
                           f"(an episode needs {', '.join(FIELDS)})", task)
    _check_set(episode.support_images, episode.support_labels, "support", task)
    _check_set(episode.query_images, episode.query_labels, "query", task)
    if episode.support_images.shape[1:] != episode.query_images.shape[1:]:
        raise EpisodeError(
            f"support and query images differ in [channels, height, width]: "
            f"{tuple(episode.support_images.shape[1:])} vs {tuple(episode.query_images.shape[1:])}", task)


def check_label_ranges(label_sets: Sequence[torch.Tensor], names: Sequence[str],
                       tasks: Sequence[Optional[int]], n_way: int) -> None:
    """Every label in ``0..n_way-1``; raises :class:`EpisodeError` naming the first bad set.

    CPU tensors are read directly; tensors on an accelerator are reduced there and read back
    together: one synchronisation for all of them.
    """
    on_device = [index for index, labels in enumerate(label_sets) if labels.device.type != "cpu"]
    extremes = {}
    if on_device:
        stacked = torch.stack([torch.stack([label_sets[i].min(), label_sets[i].max()]) for i in on_device])
        for index, (low, high) in zip(on_device, stacked.cpu().tolist()):
            extremes[index] = (low, high)
    for index, labels in enumerate(label_sets):
        low, high = extremes.get(index) or (int(labels.min()), int(labels.max()))
        if low < 0 or high >= n_way:
            bad = low if low < 0 else high
            raise EpisodeError(
                f"{names[index]} contain label {bad}, outside 0..{n_way - 1} for a {n_way}-way model "
                f"(labels must be re-indexed to 0..N-1 within each episode)", tasks[index])


def prepare_episodes(episodes: Sequence[object], n_way: int, device: torch.device,
                     dtype: torch.dtype, in_meta_batch: bool = True) -> List[Episode]:
    """Validate episodes and move them to the model's device and dtype (non-blocking copies).

    ``in_meta_batch``: errors name the episode's index in the meta-batch (else no index).
    """
    if isinstance(episodes, (torch.Tensor, str, bytes)) or not hasattr(episodes, "__len__"):
        raise EpisodeError(f"expected a sequence of episodes, got {type(episodes).__name__}")
    if len(episodes) == 0:
        raise EpisodeError("empty meta-batch: no episode was given")
    tasks = list(range(len(episodes))) if in_meta_batch else [None] * len(episodes)
    for task, episode in zip(tasks, episodes):
        check_episode_shapes(episode, task)
    label_sets, names, owners = [], [], []
    for task, episode in zip(tasks, episodes):
        label_sets += [episode.support_labels, episode.query_labels]
        names += ["support_labels", "query_labels"]
        owners += [task, task]
    check_label_ranges(label_sets, names, owners, n_way)
    return [
        Episode(*(
            getattr(episode, field).to(device=device, dtype=dtype if field.endswith("images") else torch.int64,
                                       non_blocking=True)
            for field in FIELDS
        ))
        for episode in episodes
    ]
