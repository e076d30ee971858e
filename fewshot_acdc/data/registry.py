"""``create_dataset``: one entry point for every dataset, by name."""

from __future__ import annotations

import os
from typing import Any, Callable

from .builtin import load_builtin
from .dataset import FewShotDataset
from .folder import load_folder_dataset
from .miniimagenet import load_miniimagenet
from .omniglot import load_omniglot

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"validation": "val", "valid": "val"}
_NAME_ALIASES = {"mini-imagenet": "miniimagenet", "mini_imagenet": "miniimagenet"}
_COMMON_OPTIONS = ("cache_dir", "cache")

# name -> (loader, dataset-specific options, whether it reads from root)
_LOADERS: dict[str, tuple[Callable[..., FewShotDataset], tuple[str, ...], bool]] = {
    "builtin": (load_builtin, ("class_counts", "images_per_class"), False),
    "miniimagenet": (load_miniimagenet, ("layout",), True),
    "omniglot": (load_omniglot, ("rotations", "background"), True),
    "folder": (load_folder_dataset, ("mean", "std", "identifier"), True),
}
DATASETS = tuple(_LOADERS)


def create_dataset(
    name: str,
    split: str,
    root: str | os.PathLike | None = None,
    image_size: int | None = None,
    augment: bool = False,
    seed: int = 0,
    **options: Any,
) -> FewShotDataset:
    """Load one split of a few-shot dataset.

    Args:
        name: "builtin" (generated, no download), "miniimagenet", "omniglot", or "folder"
            (custom data in the folder-per-class layout).
        split: "train", "val" or "test".
        root: the dataset folder; None searches ``$FEWSHOT_DATA`` or ``./data`` (see paths.py).
            Ignored by builtin.
        image_size: side of the square images; None: 84 (builtin, miniimagenet, folder), 28 (omniglot).
        augment: default augmentation for episode loaders of this dataset (training only).
        seed: builtin: which generated world (0 is the reference one). Real datasets ignore it:
            episode and augmentation randomness belong to the sampler/loader seed.
        options: cache_dir (default $FEWSHOT_CACHE or ~/.cache/fewshot_acdc), cache (False: no
            disk cache); omniglot: rotations (default True), background (all, small1, small2); builtin: class_counts,
            images_per_class; miniimagenet: layout ("pickle", "csv", "folders") to force one;
            folder: mean, std, identifier.

    Raises:
        ValueError: unknown name or split. TypeError: an option the dataset does not take.
        DatasetNotFoundError (a FileNotFoundError): no data where looked (names the layouts,
            the paths searched and where to get the data). CorruptDataError (a ValueError): a
            file that cannot be read (names it).
    """
    key = _NAME_ALIASES.get(str(name).lower(), str(name).lower())
    if key not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    split_key = _SPLIT_ALIASES.get(str(split).lower(), str(split).lower())
    if split_key not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if image_size is not None and (not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
    loader, specific, uses_root = _LOADERS[key]
    allowed = set(_COMMON_OPTIONS) | set(specific)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"dataset {key!r} does not take option(s) {', '.join(unknown)}; it accepts "
                        f"{', '.join(sorted(allowed))}")
    kwargs = dict(image_size=image_size, augment=bool(augment), seed=seed, **options)
    if uses_root:
        return loader(split_key, root, **kwargs)
    return loader(split_key, **kwargs)
