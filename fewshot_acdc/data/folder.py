"""Folder-per-class layout: ``<root>/<split>/<class>/<image>``.

Used for miniImageNet's third layout and, under the name ``"folder"``, for any custom or
tieredImageNet-like data:

    <root>/train/<class>/*.jpg|png|...
    <root>/val/<class>/...        (``validation/`` also accepted)
    <root>/test/<class>/...

Classes are the sub-folder names in sorted order; images are sorted by file name. Hidden files
and folders (starting with ".") are ignored. Images are converted to RGB, resized to a square
``image_size`` and cached as uint8 (see ``cache.py``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .cache import cached_images, parallel_fill
from .dataset import ArrayDataset
from .errors import DatasetNotFoundError
from .images import IMAGE_EXTENSIONS, decode_image
from .paths import describe_searched

# ImageNet statistics: the usual choice for natural images without dataset-specific constants.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FOLDER_DEFAULT_IMAGE_SIZE = 84
SPLIT_FOLDER_NAMES = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}


def find_split_folder(root: Path, split: str) -> Path | None:
    for name in SPLIT_FOLDER_NAMES[split]:
        candidate = root / name
        if candidate.is_dir():
            return candidate
    return None


def scan_class_folders(split_dir: Path) -> tuple[list[str], list[Path], np.ndarray]:
    """(class names, image paths, int64 labels) for ``split_dir/<class>/<image>``."""
    class_dirs = sorted((e for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith(".")),
                        key=lambda e: e.name)
    class_names: list[str] = []
    files: list[Path] = []
    labels: list[int] = []
    for label, entry in enumerate(class_dirs):
        class_names.append(entry.name)
        names = sorted(f.name for f in os.scandir(entry.path)
                       if f.is_file() and not f.name.startswith(".")
                       and f.name.lower().endswith(IMAGE_EXTENSIONS))
        files.extend(Path(entry.path) / name for name in names)
        labels.extend([label] * len(names))
    return class_names, files, np.asarray(labels, dtype=np.int64)


def files_fingerprint(files: Sequence[Path], root: Path) -> str:
    """sha256 over (relative path, size, mtime) of every file: changes when any image does."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def decode_files_cached(
    files: Sequence[Path], *, root: Path, prefix: str, image_size: int, cache_dir: Any,
    cache: bool, source: dict[str, Any],
) -> np.ndarray:
    """uint8 [len(files), S, S, 3] RGB images, decoded once and cached."""
    fingerprint = {**source, "files": files_fingerprint(files, root), "count": len(files),
                   "image_size": image_size, "mode": "RGB", "resample": "lanczos"}

    def fill(out: np.ndarray) -> None:
        parallel_fill(out, files, lambda p: decode_image(p, name=str(p), size=image_size, mode="RGB",
                                                         resample=Image.Resampling.LANCZOS),
                      description=f"decoding {prefix}")

    return cached_images(prefix=prefix, fingerprint=fingerprint, count=len(files),
                         shape=(image_size, image_size, 3), fill=fill, cache_dir=cache_dir, cache=cache)


def load_folder_split(split_dir: Path, *, name: str, identifier: str, split: str, image_size: int,
                      mean: Sequence[float], std: Sequence[float], augment: bool, seed: int,
                      cache_dir: Any, cache: bool, layout_name: str, hint: str = "") -> ArrayDataset:
    class_names, files, labels = scan_class_folders(split_dir)
    if not class_names:
        raise DatasetNotFoundError(f"{split_dir} has no class sub-folders (expected "
                                   f"{split_dir}/<class>/<image>). {hint}".strip())
    if not files:
        raise DatasetNotFoundError(f"{split_dir} has {len(class_names)} class folders but no images "
                                   f"(extensions {', '.join(IMAGE_EXTENSIONS)}). {hint}".strip())
    images = decode_files_cached(
        files, root=split_dir, prefix=f"{identifier}-{split}-{image_size}px", image_size=image_size,
        cache_dir=cache_dir, cache=cache,
        source={"layout": layout_name, "split_dir": str(split_dir.resolve())})
    return ArrayDataset(images, labels, class_names, name=name, identifier=identifier, split=split,
                        mean=mean, std=std, augment=augment, seed=seed,
                        layout=f"{layout_name}: {split_dir}", root=split_dir.parent)


def load_folder_dataset(split: str, root: str | os.PathLike | None, *, image_size: int | None = None,
                        augment: bool = False, seed: int = 0, cache_dir: Any = None, cache: bool = True,
                        mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                        identifier: str | None = None) -> ArrayDataset:
    """A custom dataset in the folder-per-class layout (RGB, ImageNet normalization by default).

    ``identifier`` (default ``folder-<root folder name>``) keys fixed episode files.
    """
    if root is None:
        raise DatasetNotFoundError("the 'folder' dataset needs root=<folder with train/ val/ test/> "
                                   "(--data-root on the command line)")
    root = Path(root).expanduser()
    split_dir = find_split_folder(root, split)
    if split_dir is None:
        raise DatasetNotFoundError(
            f"folder dataset: no '{split}' split under {describe_searched([root])}. Expected the "
            f"folder-per-class layout {root}/{SPLIT_FOLDER_NAMES[split][0]}/<class>/<image> "
            f"(also {root}/train/..., {root}/test/...). See data/README.md; to run without any "
            "download, use --dataset builtin.")
    size = image_size or FOLDER_DEFAULT_IMAGE_SIZE
    ident = identifier or f"folder-{root.resolve().name}"
    return load_folder_split(split_dir, name="folder", identifier=ident, split=split, image_size=size,
                             mean=mean, std=std, augment=augment, seed=seed, cache_dir=cache_dir,
                             cache=cache, layout_name="folder per class",
                             hint="To run without any download, use --dataset builtin.")

