"""The labelled image collection every loader returns: :class:`FewShotDataset`.

Images are kept as uint8 [H, W, C] (C = 3 RGB or 1 grayscale), usually memory-mapped from the
decoded-image cache, so a split costs no RAM until it is read and DataLoader workers share the
page cache instead of holding copies. Conversion to normalized float32 happens per episode in
:meth:`FewShotDataset.load_images`.
"""

from __future__ import annotations

import abc
import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .transforms import normalize_uint8, to_uint8_batch


class FewShotDataset(abc.ABC):
    """One split of a few-shot dataset: uint8 images, per-image class ids and class names.

    Attributes:
        name: registry name ("builtin", "miniimagenet", "omniglot", "folder").
        identifier: ``name`` plus any variant that changes the class list (e.g.
            "omniglot-norot"); fixed episode files are keyed by it.
        split: "train", "val" or "test".
        labels: int64 [num_images], class id of each image, in 0..num_classes-1.
        class_names: one string per class id.
        channels: 3 (RGB) or 1 (grayscale). image_size: side of the square images.
        mean, std: per-channel normalization constants (fractions of 255).
        augment: default for episode loaders built on this dataset.
        layout: human-readable description of what was loaded from where.
    """

    def __init__(
        self,
        *,
        name: str,
        split: str,
        labels: np.ndarray,
        class_names: Sequence[str],
        channels: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool = False,
        seed: int = 0,
        identifier: str | None = None,
        layout: str = "",
        root: str | Path | None = None,
    ):
        labels = np.asarray(labels, dtype=np.int64)
        if labels.ndim != 1:
            raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
        if len(class_names) == 0:
            raise ValueError(f"{name} {split}: no classes")
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise ValueError(f"{name} {split}: labels outside 0..{len(class_names) - 1}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std must have {channels} entries")
        labels.setflags(write=False)
        self.name = name
        self.identifier = identifier or name
        self.split = split
        self.labels = labels
        self.class_names = tuple(str(c) for c in class_names)
        self.channels = int(channels)
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.layout = layout
        self.root = None if root is None else str(root)
        self._class_indices: list[np.ndarray] | None = None

    # ----------------------------------------------------------------------------- structure
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_indices(self) -> list[np.ndarray]:
        """Image indices of each class (ascending), as a list indexed by class id."""
        if self._class_indices is None:
            order = np.argsort(self.labels, kind="stable")
            counts = np.bincount(self.labels, minlength=self.num_classes)
            self._class_indices = np.split(order, np.cumsum(counts)[:-1])
        return self._class_indices

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)

    def fingerprint(self) -> dict[str, Any]:
        """Checksums that change whenever image indices would refer to different classes."""
        class_list = "\n".join(self.class_names).encode("utf-8")
        return {
            "identifier": self.identifier,
            "split": self.split,
            "num_classes": self.num_classes,
            "num_images": len(self),
            "class_list_sha256": hashlib.sha256(class_list).hexdigest(),
            "labels_sha256": hashlib.sha256(self.labels.astype("<i8").tobytes()).hexdigest(),
        }

    # ----------------------------------------------------------------------------- images
    @abc.abstractmethod
    def _gather(self, indices: np.ndarray) -> np.ndarray:
        """uint8 [len(indices), H, W, C] for valid, int64 ``indices``."""

    def get_images(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 images [n, H, W, C] in the order of ``indices``."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"image index out of range for {len(self)} images")
        idx = np.where(idx < 0, idx + len(self), idx)
        return self._gather(idx)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        """(uint8 [H, W, C] image, class id)."""
        image = self.get_images([index])[0]
        return image, int(self.labels[index])

    @property
    def images(self) -> np.ndarray:
        """All images, uint8 [num_images, H, W, C]. May materialize the whole split in memory;
        episode code reads only what it needs through :meth:`get_images`."""
        return self.get_images(np.arange(len(self)))

    def load_images(
        self,
        indices: Sequence[int] | np.ndarray,
        *,
        augment: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Normalized float32 [n, C, H, W] ready for a model (augmented if ``augment``)."""
        return self.normalize(self.load_uint8(indices, augment=augment, generator=generator))

    def load_uint8(
        self,
        indices: Sequence[int] | np.ndarray,
        *,
        augment: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """uint8 [n, C, H, W] (augmented if ``augment``): the compact form episodes travel in."""
        return to_uint8_batch(self.get_images(indices), augment, generator)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 [n, C, H, W] -> float32 normalized with this dataset's mean and std."""
        return normalize_uint8(batch, self.mean, self.std)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.identifier!r}, split={self.split!r}, "
            f"classes={self.num_classes}, images={len(self)}, "
            f"{self.image_size}x{self.image_size}x{self.channels}, layout={self.layout!r})"
        )


class ArrayDataset(FewShotDataset):
    """A dataset whose images live in one uint8 array (in memory or memory-mapped .npy).

    ``source_index``/``quarter_turns`` describe virtual images: item i is stored image
    ``source_index[i]`` rotated counter-clockwise by ``quarter_turns[i]`` * 90 degrees. Omniglot
    uses this for its rotated classes so that rotations cost no storage.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        class_names: Sequence[str],
        *,
        source_index: np.ndarray | None = None,
        quarter_turns: np.ndarray | None = None,
        **kwargs: Any,
    ):
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [n, H, W, C], got {images.dtype} {images.shape}")
        super().__init__(labels=labels, class_names=class_names, channels=images.shape[3],
                         image_size=images.shape[1], **kwargs)
        if images.shape[1] != images.shape[2]:
            raise ValueError(f"images must be square, got {images.shape[1:3]}")
        self._images = images
        if source_index is None:
            if images.shape[0] != len(self.labels):
                raise ValueError(f"{images.shape[0]} images but {len(self.labels)} labels")
            self._source_index = None
            self._quarter_turns = None
        else:
            self._source_index = np.asarray(source_index, dtype=np.int64)
            self._quarter_turns = (np.zeros_like(self._source_index) if quarter_turns is None
                                   else np.asarray(quarter_turns, dtype=np.int64) % 4)
            if self._source_index.shape != self.labels.shape or self._quarter_turns.shape != self.labels.shape:
                raise ValueError("source_index/quarter_turns must have one entry per label")

    @property
    def stored_images(self) -> np.ndarray:
        """The underlying uint8 store (before any virtual rotation)."""
        return self._images

    def _gather(self, indices: np.ndarray) -> np.ndarray:
        if self._source_index is None:
            return np.asarray(self._images[indices])
        out = np.asarray(self._images[self._source_index[indices]])
        turns = self._quarter_turns[indices]
        for k in (1, 2, 3):
            mask = turns == k
            if mask.any():
                out[mask] = np.rot90(out[mask], k=k, axes=(1, 2))
        return out

    # Memory-mapped stores travel to DataLoader workers (spawn start method) as a file name, not
    # as a pickled copy of the whole split.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        images = state["_images"]
        if isinstance(images, np.memmap) and images.filename is not None:
            state["_images"] = ("__npy_memmap__", str(images.filename))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        images = state["_images"]
        if isinstance(images, tuple) and images and images[0] == "__npy_memmap__":
            state["_images"] = np.load(images[1], mmap_mode="r")
        self.__dict__.update(state)
