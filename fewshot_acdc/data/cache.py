"""Decoded-image cache: uint8 ``.npy`` files memory-mapped on later runs.

Decoding tens of thousands of JPEGs (or unpickling a 1 GB pickle) on every start would make data
loading, not MAML, the bottleneck. Each loader describes its source (file names, sizes, mtimes,
target image size...) as a *fingerprint*; the decoded split is stored once under
``<cache_dir>/images/<prefix>-<sha256(fingerprint)[:16]>.npy`` and memory-mapped afterwards. A
changed source gives a different fingerprint, hence a fresh cache file; stale files are never
read. Writes go to a temporary file that is renamed into place, so an interrupted build or two
processes building the same split at once never leave a half-written cache behind.

Default cache directory: ``$FEWSHOT_CACHE`` if set, else ``~/.cache/fewshot_acdc``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

CACHE_FORMAT = 1  # bump when the stored pixels for an unchanged source would change
CACHE_ENV = "FEWSHOT_CACHE"

T = TypeVar("T")


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fewshot_acdc"


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def fingerprint_key(fingerprint: dict[str, Any]) -> str:
    text = json.dumps({"cache_format": CACHE_FORMAT, **fingerprint}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_signature(path: Path) -> list[Any]:
    """What identifies a source file's content cheaply: name, size and modification time."""
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def _cache_paths(cache_dir: str | os.PathLike | None, prefix: str,
                 fingerprint: dict[str, Any]) -> tuple[Path, Path]:
    directory = resolve_cache_dir(cache_dir) / "images"
    stem = f"{prefix}-{fingerprint_key(fingerprint)}"
    return directory / f"{stem}.npy", directory / f"{stem}.json"


def load_cached_images(
    *, prefix: str, fingerprint: dict[str, Any], cache_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, dict[str, Any]] | None:
    """(memory-mapped uint8 images, the ``extra`` stored with them) or None if not cached."""
    path, sidecar = _cache_paths(cache_dir, prefix, fingerprint)
    if not (path.exists() and sidecar.exists()):
        return None
    try:
        record = json.loads(sidecar.read_text())
        stored = np.load(path, mmap_mode="r")
    except (ValueError, OSError):
        return None  # unreadable cache: the caller rebuilds it
    if stored.dtype != np.uint8 or list(stored.shape) != list(record.get("shape", [])):
        return None
    return stored, record.get("extra", {})


def cached_images(
    *,
    prefix: str,
    fingerprint: dict[str, Any],
    count: int,
    shape: tuple[int, int, int],
    fill: Callable[[np.ndarray], None],
    cache_dir: str | os.PathLike | None = None,
    cache: bool = True,
    extra: dict[str, Any] | None = None,
) -> np.ndarray:
    """Return uint8 [count, *shape] images, building them with ``fill(out)`` only if not cached.

    ``fill`` must write every row of ``out``. ``extra`` (JSON-serializable, e.g. labels that are
    expensive to recompute) is stored alongside and returned by :func:`load_cached_images`. With
    ``cache=False`` (or an unwritable cache directory, which warns) the images are built in
    memory and not stored.
    """
    full_shape = (int(count), *map(int, shape))
    if not cache:
        out = np.empty(full_shape, dtype=np.uint8)
        fill(out)
        return out
    hit = load_cached_images(prefix=prefix, fingerprint=fingerprint, cache_dir=cache_dir)
    if hit is not None and hit[0].shape == full_shape:
        return hit[0]

    path, sidecar = _cache_paths(cache_dir, prefix, fingerprint)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=full_shape)
    except OSError as exc:
        warnings.warn(f"cannot write the image cache in {path.parent} ({exc}); decoding into "
                      "memory instead (set cache_dir or FEWSHOT_CACHE to a writable folder)")
        out = np.empty(full_shape, dtype=np.uint8)
        fill(out)
        return out
    try:
        fill(writer)
        writer.flush()
        del writer
        # The sidecar goes first: a cache entry counts only once both files exist.
        record = {"shape": list(full_shape), "fingerprint": fingerprint, "extra": extra or {}}
        sidecar_tmp = sidecar.with_name(f"{sidecar.name}.{os.getpid()}.tmp")
        sidecar_tmp.write_text(json.dumps(record, default=str))
        os.replace(sidecar_tmp, sidecar)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return np.load(path, mmap_mode="r")


def parallel_fill(
    out: np.ndarray,
    items: Sequence[T],
    decode: Callable[[T], np.ndarray],
    *,
    workers: int | None = None,
    description: str = "decoding",
) -> None:
    """``out[i] = decode(items[i])`` using threads (PIL releases the GIL while decoding/resizing).

    The first decoding error is raised as is (loaders raise CorruptDataError naming the file).
    """
    if len(items) != out.shape[0]:
        raise ValueError(f"{len(items)} items for {out.shape[0]} rows")
    workers = workers or min(8, os.cpu_count() or 1)
    show_progress = len(items) >= 5000
    progress = None
    if show_progress:
        from tqdm import tqdm

        progress = tqdm(total=len(items), desc=description, unit="img", leave=False)

    def work(start: int, stop: int) -> None:
        for i in range(start, stop):
            out[i] = decode(items[i])

    chunk = 256
    bounds = [(s, min(s + chunk, len(items))) for s in range(0, len(items), chunk)]
    try:
        if workers == 1 or len(bounds) <= 1:
            for start, stop in bounds:
                work(start, stop)
                if progress is not None:
                    progress.update(stop - start)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(work, s, e) for s, e in bounds]
                for future, (start, stop) in zip(futures, bounds):
                    future.result()
                    if progress is not None:
                        progress.update(stop - start)
    finally:
        if progress is not None:
            progress.close()
