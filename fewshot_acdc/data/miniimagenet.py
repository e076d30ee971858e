"""miniImageNet (Vinyals et al. 2016; Ravi & Larochelle 2017 split): 64/16/20 classes x 600 images.

Three on-disk layouts are recognised, looked for in this order in ``root`` and then in
``root/miniimagenet`` (and spelling variants):

(a) pickle cache (learn2learn / Ren et al.):
        mini-imagenet-cache-train.pkl, mini-imagenet-cache-validation.pkl, mini-imagenet-cache-test.pkl
    each a dict ``{"image_data": uint8 [N, 84, 84, 3], "class_dict": {class: [indices]}}``, read
    with a restricted unpickler (see ``safe_pickle.py``).
(b) Ravi & Larochelle split CSVs plus images:
        train.csv, val.csv, test.csv   (header ``filename,label``)
        images/<filename>              (flat) or images/<label>/<filename> (one folder per class)
(c) folder per class: train/<class>/*.jpg, val/<class>/... (or validation/), test/<class>/...

Classes are ordered by name (WordNet id); within a class, images keep the source order. Images are
resized directly to ``image_size`` x ``image_size`` (84 by default; 224 for ResNet settings) with
Lanczos filtering, and the decoded uint8 split is cached and memory-mapped (``cache.py``).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from .cache import cached_images, file_signature, load_cached_images, parallel_fill
from .dataset import ArrayDataset
from .errors import CorruptDataError, DatasetNotFoundError
from .folder import decode_files_cached, find_split_folder, load_folder_split
from .paths import candidate_roots, describe_searched, how_to_look_elsewhere
from .safe_pickle import safe_load_pickle

# Per-channel statistics of miniImageNet's training images (as used by MetaOptNet, RFS, FEAT).
MINIIMAGENET_MEAN = tuple(x / 255.0 for x in (120.39586422, 115.59361427, 104.54012653))
MINIIMAGENET_STD = tuple(x / 255.0 for x in (70.68188272, 68.27635443, 72.54505529))
MINIIMAGENET_DEFAULT_IMAGE_SIZE = 84

ROOT_ALIASES = ("miniimagenet", "mini-imagenet", "mini_imagenet", "miniImagenet", "miniImageNet")
PICKLE_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}
LAYOUTS = ("pickle", "csv", "folders")

WHERE_TO_GET = (
    "Get the data: the pickle cache (mini-imagenet-cache-{train,validation,test}.pkl) from "
    "learn2learn's Zenodo record https://zenodo.org/records/7978538 ; or the Ravi & Larochelle "
    "split CSVs from https://github.com/twitter/meta-learning-lstm/tree/master/data/miniImagenet "
    "with an images/ folder made from ImageNet (ILSVRC-2012 train), e.g. with "
    "https://github.com/yaoyao-liu/mini-imagenet-tools . See data/README.md. To run without any "
    "download, use --dataset builtin."
)


def pickle_path(root: Path, split: str) -> Path:
    return root / f"mini-imagenet-cache-{PICKLE_SPLIT_NAMES[split]}.pkl"


def detect_layout(root: Path, split: str) -> str | None:
    """The first layout of (pickle, csv, folders) present for ``split`` in ``root``, else None."""
    if pickle_path(root, split).is_file():
        return "pickle"
    if (root / f"{split}.csv").is_file():
        return "csv"  # an images/ folder is checked when loading, with its own error
    if find_split_folder(root, split) is not None:
        return "folders"
    return None


def not_found_message(split: str, searched: list[Path], root: str | os.PathLike | None = None) -> str:
    """``root``: the folder the caller gave (None: the default was searched)."""
    first = searched[0]
    return (
        f"miniImageNet '{split}' split not found; searched {describe_searched(searched)}.\n"
        f"Layouts looked for (in each searched folder, shown for {first}):\n"
        f"  (a) pickle cache:         {pickle_path(first, split)}\n"
        f"  (b) Ravi split CSV:       {first / f'{split}.csv'} plus {first / 'images'}/<filename> "
        f"(flat) or images/<label>/<filename>\n"
        f"  (c) folder per class:     {first / split}/<class>/*.jpg\n"
        f"{how_to_look_elsewhere(root)}\n"
        f"{WHERE_TO_GET}"
    )


def read_split_csv(path: Path) -> tuple[list[str], list[str]]:
    """(filenames, labels) from a Ravi & Larochelle ``filename,label`` CSV."""
    filenames: list[str] = []
    labels: list[str] = []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = [h.strip().lower() for h in next(reader, [])]
            if header[:2] != ["filename", "label"]:
                raise CorruptDataError(path, f"expected the header 'filename,label', found {','.join(header)!r}")
            for line_number, row in enumerate(reader, start=2):
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) < 2 or not row[0].strip() or not row[1].strip():
                    raise CorruptDataError(path, f"line {line_number}: expected 'filename,label', got {row!r}")
                filenames.append(row[0].strip())
                labels.append(row[1].strip())
    except UnicodeDecodeError as exc:
        raise CorruptDataError(path, f"not a UTF-8 text CSV ({exc})") from exc
    if not filenames:
        raise CorruptDataError(path, "the CSV lists no images")
    return filenames, labels


def _resolve_csv_images(images_dir: Path, filenames: list[str], labels: list[str], csv_path: Path) -> list[Path]:
    """Each CSV row's file: images/<filename> (flat) or images/<label>/<filename>."""
    flat = {e.name for e in os.scandir(images_dir) if e.is_file()}
    per_class: dict[str, set[str]] = {}
    resolved: list[Path] = []
    missing: list[str] = []
    for filename, label in zip(filenames, labels):
        if filename in flat:
            resolved.append(images_dir / filename)
            continue
        if label not in per_class:
            class_dir = images_dir / label
            per_class[label] = ({e.name for e in os.scandir(class_dir) if e.is_file()}
                                if class_dir.is_dir() else set())
        if filename in per_class[label]:
            resolved.append(images_dir / label / filename)
        else:
            missing.append(filename)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetNotFoundError(
            f"{csv_path} lists {len(missing)} images not found in {images_dir} (looked for "
            f"images/<filename> and images/<label>/<filename>): {shown}. {WHERE_TO_GET}")
    return resolved


def _load_csv_layout(root: Path, split: str, image_size: int, cache_dir: Any, cache: bool,
                     common: dict[str, Any]) -> ArrayDataset:
    csv_path = root / f"{split}.csv"
    images_dir = root / "images"
    filenames, label_names = read_split_csv(csv_path)
    if not images_dir.is_dir():
        raise DatasetNotFoundError(
            f"found {csv_path} but no images folder {images_dir} next to it (layout (b) needs "
            f"images/<filename> or images/<label>/<filename>). {WHERE_TO_GET}")
    files = _resolve_csv_images(images_dir, filenames, label_names, csv_path)
    class_names = sorted(set(label_names))
    class_id = {name: i for i, name in enumerate(class_names)}
    # Group by class (stable, so each class keeps the CSV order) to match the other layouts.
    order = sorted(range(len(files)), key=lambda i: class_id[label_names[i]])
    files = [files[i] for i in order]
    labels = np.asarray([class_id[label_names[i]] for i in order], dtype=np.int64)
    images = decode_files_cached(
        files, root=root, prefix=f"miniimagenet-{split}-{image_size}px", image_size=image_size,
        cache_dir=cache_dir, cache=cache,
        source={"layout": "csv", "csv": file_signature(csv_path)})
    return ArrayDataset(images, labels, class_names, layout=f"split CSV: {csv_path} + {images_dir}",
                        root=root, **common)


def _class_dict_order(class_dict: Any, count: int, path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(sorted class names, image order, labels in that order) from ``class_dict``.

    Images are grouped by class (classes sorted by name) in the order ``class_dict`` lists them;
    every image must belong to exactly one class.
    """
    if not isinstance(class_dict, Mapping) or not class_dict:
        raise CorruptDataError(path, "'class_dict' must be a non-empty dict {class: [image indices]}")
    by_name = {str(k): v for k, v in class_dict.items()}
    class_names = sorted(by_name)
    order_parts, label_parts = [], []
    for class_id, name in enumerate(class_names):
        try:
            indices = np.asarray(list(by_name[name]), dtype=np.int64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise CorruptDataError(path, f"class_dict[{name!r}] is not a list of image indices") from exc
        if indices.size and (indices.min() < 0 or indices.max() >= count):
            raise CorruptDataError(path, f"class_dict[{name!r}] has indices outside 0..{count - 1}")
        order_parts.append(indices)
        label_parts.append(np.full(indices.size, class_id, dtype=np.int64))
    order = np.concatenate(order_parts)
    seen = np.bincount(order, minlength=count)
    if (seen > 1).any():
        raise CorruptDataError(path, f"image {int(np.argmax(seen > 1))} is listed under more than one class")
    if (seen == 0).any():
        raise CorruptDataError(path, f"{int((seen == 0).sum())} images belong to no class in class_dict")
    return class_names, order, np.concatenate(label_parts)


def _load_pickle_layout(root: Path, split: str, image_size: int, cache_dir: Any, cache: bool,
                        common: dict[str, Any]) -> ArrayDataset:
    path = pickle_path(root, split)
    prefix = f"miniimagenet-{split}-{image_size}px"
    fingerprint = {"layout": "pickle", "source": file_signature(path), "image_size": image_size}
    layout = f"pickle cache: {path}"
    if cache:
        hit = load_cached_images(prefix=prefix, fingerprint=fingerprint, cache_dir=cache_dir)
        if hit is not None:
            images, extra = hit
            return ArrayDataset(images, np.asarray(extra["labels"], dtype=np.int64), extra["class_names"],
                                layout=layout, root=root, **common)
    data = safe_load_pickle(path)
    if not isinstance(data, Mapping) or "image_data" not in data or "class_dict" not in data:
        found = sorted(map(str, data)) if isinstance(data, Mapping) else type(data).__name__
        raise CorruptDataError(path, f"expected a dict with 'image_data' and 'class_dict', found {found}")
    source = data["image_data"]
    if not isinstance(source, np.ndarray) or source.dtype != np.uint8 or source.ndim != 4 or source.shape[3] != 3:
        shape = getattr(source, "shape", None)
        raise CorruptDataError(path, f"'image_data' must be a uint8 [N, H, W, 3] array, got "
                                     f"{getattr(source, 'dtype', type(source).__name__)} {shape}")
    class_names, order, labels = _class_dict_order(data["class_dict"], source.shape[0], path)

    def fill(out: np.ndarray) -> None:
        if source.shape[1:3] == (image_size, image_size):
            for start in range(0, len(order), 4096):
                out[start:start + 4096] = source[order[start:start + 4096]]
        else:
            def resize(i: int) -> np.ndarray:
                image = Image.fromarray(source[i]).resize((image_size, image_size), Image.Resampling.LANCZOS)
                return np.asarray(image, dtype=np.uint8)
            parallel_fill(out, list(order), resize, description=f"resizing {path.name}")

    images = cached_images(prefix=prefix, fingerprint=fingerprint, count=len(order),
                           shape=(image_size, image_size, 3), fill=fill, cache_dir=cache_dir,
                           cache=cache, extra={"labels": labels.tolist(), "class_names": class_names})
    return ArrayDataset(images, labels, class_names, layout=layout, root=root, **common)


def load_miniimagenet(split: str, root: str | os.PathLike | None = None, *, image_size: int | None = None,
                      augment: bool = False, seed: int = 0, cache_dir: Any = None, cache: bool = True,
                      layout: str | None = None) -> ArrayDataset:
    """Load one split of miniImageNet from whichever layout is found (see module docstring).

    ``layout`` ("pickle", "csv" or "folders") forces one layout instead of auto-detection.
    Raises DatasetNotFoundError (names the layouts and paths searched and where to get the data)
    or CorruptDataError (names the bad file).
    """
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    size = int(image_size or MINIIMAGENET_DEFAULT_IMAGE_SIZE)
    searched = candidate_roots(root, ROOT_ALIASES)
    for folder in searched:
        if not folder.is_dir():
            continue
        if layout is None:
            found = detect_layout(folder, split)
        else:
            found = layout if _layout_present(folder, split, layout) else None
        if found is None:
            continue
        common = dict(name="miniimagenet", identifier="miniimagenet", split=split,
                      mean=MINIIMAGENET_MEAN, std=MINIIMAGENET_STD, augment=augment, seed=seed)
        if found == "pickle":
            return _load_pickle_layout(folder, split, size, cache_dir, cache, common)
        if found == "csv":
            return _load_csv_layout(folder, split, size, cache_dir, cache, common)
        split_dir = find_split_folder(folder, split)
        assert split_dir is not None
        return load_folder_split(split_dir, image_size=size, cache_dir=cache_dir, cache=cache,
                                 layout_name="folder per class", hint=WHERE_TO_GET, **common)
    raise DatasetNotFoundError(not_found_message(split, searched, root))


def _layout_present(folder: Path, split: str, layout: str) -> bool:
    if layout == "pickle":
        return pickle_path(folder, split).is_file()
    if layout == "csv":
        return (folder / f"{split}.csv").is_file()
    return find_split_folder(folder, split) is not None
