"""Fault injection for the crash-consistency tests: kill or interrupt this process at a named point.

The run directory promises that an interruption at any point resumes to the uninterrupted run
(docs/run_directory.md). The only way to test that is to interrupt real processes at the points
that matter: between the writes of a checkpoint and of what derives from it, inside validation,
between meta-steps. The code marks those points with :func:`fault_point`; the tests arm them with
``FEWSHOT_ACDC_FAULTS``:

    FEWSHOT_ACDC_FAULTS="committed:1"                    SIGKILL at the first pass of "committed"
    FEWSHOT_ACDC_FAULTS="validation:2:SIGINT"            Ctrl-C at the second validation episode
    FEWSHOT_ACDC_FAULTS="validation:1:SIGINT,validation:2:SIGINT"   two Ctrl-C

Counts are per process and start when :func:`arm` reads the variable (training calls it on start).
Unarmed, which is always the case outside the tests, a point costs one truth test.
"""
from __future__ import annotations

import os
import signal
from collections import Counter
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, TypeVar

ENV = "FEWSHOT_ACDC_FAULTS"

T = TypeVar("T")

_plan: Dict[str, List[Tuple[int, int]]] = {}
_passes: Counter = Counter()


def parse(spec: str) -> Dict[str, List[Tuple[int, int]]]:
    """``"label:n[:SIGNAL],..."`` -> ``{label: [(n, signal number), ...]}``."""
    plan: Dict[str, List[Tuple[int, int]]] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        fields = item.split(":")  # labels may hold colons ("write:last.pt"); N and SIGNAL do not
        name = fields.pop() if len(fields) > 2 and not fields[-1].isdigit() else "SIGKILL"
        if len(fields) < 2 or not fields[-1].isdigit() or int(fields[-1]) < 1:
            raise ValueError(f"{ENV}: {item!r} is not LABEL:N or LABEL:N:SIGNAL (N >= 1)")
        number = getattr(signal, name, None)
        if not name.startswith("SIG") or not isinstance(number, int):
            raise ValueError(f"{ENV}: {name!r} is not a signal name (e.g. SIGKILL, SIGINT)")
        plan.setdefault(":".join(fields[:-1]), []).append((int(fields[-1]), int(number)))
    return plan


def arm(spec: Optional[str] = None) -> None:
    """Read the plan from ``spec`` (default: the environment variable) and restart the counts."""
    global _plan
    _plan = parse(os.environ.get(ENV, "") if spec is None else spec)
    _passes.clear()


def disarm() -> None:
    global _plan
    _plan = {}
    _passes.clear()


def fault_point(label: str) -> None:
    """A point where the tests may kill or interrupt this process."""
    if not _plan or label not in _plan:
        return
    _passes[label] += 1
    for count, number in _plan[label]:
        if count == _passes[label]:
            os.kill(os.getpid(), number)


def fault_points(items: Iterable[T], label: str) -> Iterator[T]:
    """``items``, passing ``fault_point(label)`` before each (e.g. each validation episode)."""
    for item in items:
        fault_point(label)
        yield item
