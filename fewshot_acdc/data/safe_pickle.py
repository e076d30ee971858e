"""A restricted unpickler for the miniImageNet pickle cache.

``mini-imagenet-cache-{train,validation,test}.pkl`` circulate as plain pickles (a dict with
``image_data``: uint8 [N, 84, 84, 3] and ``class_dict``: class -> list of indices). Loading a
pickle with :func:`pickle.load` executes whatever callables it names, so a file from the internet
could run arbitrary code. :func:`safe_load_pickle` allows only the globals that containers and
numpy arrays need and refuses anything else with :class:`UnsafePickleError`, naming the file and
the forbidden global. Corrupt or truncated files raise :class:`CorruptDataError` naming the file.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

from .errors import CorruptDataError, UnsafePickleError

# (module, name) pairs a numpy-array-and-containers pickle may reference. numpy moved its
# internals from numpy.core to numpy._core in 2.0, and pickles carry whichever the writer used.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol-5 out-of-band array buffers
        ("numpy._core.numeric", "_frombuffer"),
        # Protocol <= 2 stores bytes (and so array data) as latin-1 text re-encoded with
        # _codecs.encode; encoding a string cannot execute code.
        ("_codecs", "encode"),
        # Containers that protocols < 4 spell as globals.
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "slice"),
        ("builtins", "range"),
        ("builtins", "complex"),
        ("builtins", "bytearray"),
        ("__builtin__", "set"),  # Python 2 pickles
        ("__builtin__", "frozenset"),
        ("collections", "OrderedDict"),
    }
)

# numpy dtype classes pickled by numpy >= 1.25 (e.g. numpy.dtypes.UInt8DType) are harmless types.
_ALLOWED_MODULE_PREFIXES = ("numpy.dtypes",)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, path: str):
        # latin1 lets Python 2 pickles (str holding raw bytes) load; it does not affect
        # pickles written by Python 3.
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS or (
            module.startswith(_ALLOWED_MODULE_PREFIXES) and name.endswith("DType")
        ):
            return super().find_class(module, name)
        raise UnsafePickleError(self._path, f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(self._path, f"persistent id {pid!r}")


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Load ``path`` allowing only plain containers and numpy arrays.

    Raises:
        UnsafePickleError: the pickle names any other global (nothing it names is executed).
        CorruptDataError: the file is truncated or not a pickle.
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        try:
            return _RestrictedUnpickler(handle, str(path)).load()
        except UnsafePickleError:
            raise
        except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError,
                AttributeError, MemoryError, UnicodeDecodeError) as exc:
            size = path.stat().st_size
            raise CorruptDataError(
                path,
                f"cannot unpickle ({type(exc).__name__}: {exc}); the file ({size} bytes) is "
                "truncated or not a pickle; download it again",
            ) from exc
