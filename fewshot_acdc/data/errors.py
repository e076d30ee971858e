"""Exceptions raised by the data package.

Each one subclasses the built-in exception a caller would naturally catch (FileNotFoundError for
missing data, ValueError for bad data or impossible requests), so generic handlers still work, and
each message names the file or class involved.
"""

from __future__ import annotations

import pickle


class DatasetNotFoundError(FileNotFoundError):
    """No dataset layout was found where one was looked for."""


class CorruptDataError(ValueError):
    """A data file exists but cannot be read (corrupt image, truncated pickle, malformed CSV)."""

    def __init__(self, path: object, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global that the restricted unpickler does not allow."""

    def __init__(self, path: object, global_name: str):
        self.path = str(path)
        self.global_name = global_name
        super().__init__(
            f"{self.path}: refusing to load pickle: it references the global '{global_name}', "
            "which is not a plain container or numpy array type. Only the miniImageNet pickle "
            "cache format (dict with numpy arrays, lists and ints) is accepted; a pickle naming "
            "other globals can run arbitrary code when loaded."
        )


class ImpossibleEpisodeError(ValueError):
    """The requested N-way K-shot Q-query episode cannot be drawn from this split."""


class EpisodeSetMismatchError(ValueError):
    """A saved fixed episode set was made from a different dataset than the one given."""
