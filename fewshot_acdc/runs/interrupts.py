"""Ctrl-C during training: stop at the next point between meta-steps, where the state can be saved.

A ``KeyboardInterrupt`` raised wherever the interpreter happens to be (in the middle of an
optimizer step, of a validation, of the bookkeeping of an interval) leaves a state that no
checkpoint should hold. So the first Ctrl-C only asks to stop: training checks the request once
per meta-step, after the step's bookkeeping, saves and raises ``KeyboardInterrupt`` there. A
second Ctrl-C stops at once, saving nothing: the last checkpoint then resumes to the same run,
since everything after it is recomputed identically.
"""
from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any, Optional


class DeferredInterrupt:
    """Context manager; ``requested`` is True once Ctrl-C was pressed while ``active``.

    Outside the main thread (where Python delivers no signals) it changes nothing. Leaving it
    without an exception after a request raises ``KeyboardInterrupt``, so a Ctrl-C that came
    after the last check is not swallowed.
    """

    def __init__(self) -> None:
        self.requested = False
        self.active = False  # deferring only while True: the trainer sets it around its loop
        self._installed = False
        self._previous: Any = None

    def __enter__(self) -> "DeferredInterrupt":
        self.requested = False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if not self.active:  # setting up (e.g. decoding a dataset) or finishing: stop at once
            raise KeyboardInterrupt
        if self.requested:
            self._restore()
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping once this meta-step is done and saved; press Ctrl-C again to stop at "
              "once (the run then resumes from its last checkpoint, losing nothing)", file=sys.stderr, flush=True)

    def _restore(self) -> None:
        if self._installed:
            # None: the previous handler was not set from Python; the default is the closest.
            signal.signal(signal.SIGINT, signal.SIG_DFL if self._previous is None else self._previous)
            self._installed = False

    def __exit__(self, exc_type, exc, traceback) -> None:
        self._restore()
        if exc_type is None and self.requested:
            raise KeyboardInterrupt
