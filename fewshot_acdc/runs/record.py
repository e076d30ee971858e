"""The run record: what training and evaluation write to a run directory, as types.

``summary.json`` is a :class:`TrainingSummary` (a finished run) or a :class:`TrainingFailure`
(a run stopped on a bad meta-loss); ``eval/<split>_<W>way_<S>shot.json`` is an
:class:`EvaluationRecord`; ``eval/omniglot-all-runs.json`` is a :class:`BenchmarkRecord`. Both
evaluation records carry an :class:`EvaluationContext` (BatchNorm, inner-loop step sizes, code
and machine: their provenance), flattened into the same JSON object.

Training and evaluation build these and write ``to_json()``; the results module reads them back
with ``from_json(mapping, path)``. The JSON keys, and their order, are those the run directory
has always had (docs/run_directory.md), so every file already written stays readable:

- a field an older file lacks reads as its documented default (``None`` unless said otherwise:
  ``config_changes`` ``()``, ``world_size`` 1, since such files predate both);
- a field that is present but of the wrong type, or a required one that is missing, raises
  :class:`RecordError`, whose message names the file and the field;
- keys the types do not know are ignored.

The 95% confidence interval of every record is :func:`mean_ci95` (the one implementation; the
results module re-exports it). Torch-free, so results can read runs without torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..vocabulary import ACDC_SHARINGS, conv_for_acdc

#: z-value of a two-sided 95% normal interval.
Z95 = 1.96


def mean_ci95(values: Sequence[float]) -> Tuple[float, float, int]:
    """``(mean, ci95, n)`` with ``ci95 = 1.96 * std(values, ddof=0) / sqrt(n)``: the population
    standard deviation, as in "A Closer Look at Few-shot Classification". Raises ValueError on
    no values."""
    a = np.asarray(values, dtype=float)
    n = int(a.size)
    if n == 0:
        raise ValueError("mean_ci95 needs at least one value")
    mean = float(np.mean(a))
    ci = float(Z95 * np.std(a, ddof=0) / math.sqrt(n))
    return mean, ci, n


class RecordError(ValueError):
    """A run file that is not a valid record: ``path`` names the file, ``field`` the field and
    ``detail`` says what is wrong with it (``str()`` is ``"<path>: <detail>"``)."""

    def __init__(self, path: object, field_name: Optional[str], detail: str) -> None:
        self.path, self.field, self.detail = path, field_name, detail
        super().__init__(f"{path}: {detail}")


_MISSING = object()


def _read(data: Mapping[str, Any], path: object, name: str, kind: str, default: Any = None,
          required: bool = False, why: str = "") -> Any:
    """``data[name]`` checked against ``kind`` (``int``, ``number``, ``str``, ``bool``,
    ``fractions``, ``mapping``, ``list``, ``any``); ``default`` where it is missing or null."""
    value = data.get(name, _MISSING)
    if value is _MISSING or value is None:
        if required:
            raise RecordError(path, name, f"no {name}{why}")
        return default
    if kind == "any":
        return value
    if kind == "int":
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise RecordError(path, name, f"{name} is not an integer ({value!r})")
        return int(value)
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RecordError(path, name, f"{name} is not a finite number ({value!r})")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise RecordError(path, name, f"{name} is not a string ({value!r})")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise RecordError(path, name, f"{name} is not true or false ({value!r})")
        return value
    if kind == "mapping":
        if not isinstance(value, dict):
            raise RecordError(path, name, f"{name} is not a JSON object ({type(value).__name__})")
        return value
    if kind == "list":
        if not isinstance(value, list):
            raise RecordError(path, name, f"{name} is not a list ({type(value).__name__})")
        return tuple(value)
    if kind == "fractions":
        if not isinstance(value, list):
            raise RecordError(path, name, f"{name} is not a list ({type(value).__name__})")
        if not value:
            raise RecordError(path, name, f"{name} is empty")
        for i, x in enumerate(value):
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise RecordError(path, name, f"{name} [{i}] = {x!r} is not a number")
            if not math.isfinite(x) or x < 0 or x > 1:
                raise RecordError(path, name, f"{name} [{i}] = {x!r} is outside [0, 1]")
        return tuple(value)
    raise AssertionError(kind)  # pragma: no cover


def _mapping(data: Any, path: object) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise RecordError(path, None, f"expected a JSON object, got {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------------------------
# summary.json

#: What a run trained, as summary.json records it (the results module also reads these from
#: config.yaml, for runs without a summary).
SUMMARY_IDENTITY = ("dataset", "backbone", "conv", "size", "group_size", "adapt", "first_order", "ways", "shots",
                    "head_init")
#: What a run cost, as summary.json records it.
SUMMARY_COSTS = ("total_parameters", "adapted_parameters", "seconds_per_meta_step", "peak_memory_mb")


@dataclass(frozen=True)
class TrainingSummary:
    """``summary.json`` of a finished run. Every field but ``status`` may be missing in a file
    (``None``; ``config_changes`` ``()`` and ``world_size`` 1 for files from before they were
    recorded). ``size`` is the conv kind's size (ACDC atoms m, BasisConv rank r, DCF
    Fourier-Bessel atoms K, repetition base width b: ``vocabulary.ConvKind.size_key`` names it;
    None for standard convolutions); files from before it was one field hold it as ``atoms``,
    which sized every kind, standard ones included. ``seconds_per_meta_step`` is meta-training
    time only (validation excluded); ``world_size`` the processes of the last start
    (provenance.jsonl has each start's)."""

    backbone: Optional[str] = None
    conv: Optional[str] = None
    size: Optional[int] = None
    group_size: Optional[int] = None
    adapt: Optional[str] = None
    first_order: Optional[bool] = None
    head_init: Optional[str] = None
    dataset: Optional[str] = None
    ways: Optional[int] = None
    shots: Optional[int] = None
    image_size: Optional[int] = None
    iterations: Optional[int] = None
    seed: Optional[int] = None
    total_parameters: Optional[int] = None
    adapted_parameters: Optional[int] = None
    seconds_per_meta_step: Optional[float] = None
    peak_memory_mb: Optional[float] = None
    best_val_accuracy: Optional[float] = None
    best_iteration: Optional[int] = None
    device: Optional[str] = None
    config_changes: Tuple[Any, ...] = ()
    world_size: int = 1
    stopped_early: Optional[int] = None  # the iteration the plateau rule (plateau_validations) stopped at
    status: str = field(default="finished", init=False)

    _KINDS = {"backbone": "str", "conv": "str", "size": "int", "group_size": "int", "adapt": "str",
              "first_order": "bool", "head_init": "str", "dataset": "str", "ways": "int", "shots": "int", "image_size": "int",
              "iterations": "int", "seed": "int", "total_parameters": "int", "adapted_parameters": "int",
              "seconds_per_meta_step": "number", "peak_memory_mb": "number", "best_val_accuracy": "number",
              "best_iteration": "int", "device": "str", "config_changes": "list", "world_size": "int",
              "stopped_early": "int"}

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"status": self.status}
        for f in fields(self):
            if f.name != "status":
                value = getattr(self, f.name)
                out[f.name] = list(value) if f.name == "config_changes" else value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], path: object = "summary.json") -> "TrainingSummary":
        summary, problems = cls.read_fields(data, path)
        if problems:
            raise problems[0]
        return summary

    @classmethod
    def read_fields(cls, data: Mapping[str, Any], path: object = "summary.json"
                    ) -> Tuple["TrainingSummary", Tuple[RecordError, ...]]:
        """The summary and the problems of its fields: a field of the wrong type reads as missing
        (its default) and is reported, the others are kept (the results module lists such a run
        with a warning instead of dropping it; :meth:`from_json` refuses it). A status other
        than ``finished`` or a non-object raises :class:`RecordError`.

        Files from before today's keys are read as they meant: ``acdc`` (the sharing scope)
        where ``conv`` is missing, and ``atoms`` where ``size`` is (it sized every kind, and
        meant nothing for standard convolutions).
        """
        data = _mapping(data, path)
        if data.get("status") != "finished":
            raise RecordError(path, "status", f"status is {data.get('status')!r}, not 'finished'")
        data = dict(data)
        if data.get("conv") is None and isinstance(data.get("acdc"), str) and data["acdc"] in ACDC_SHARINGS:
            data["conv"] = conv_for_acdc(data["acdc"])
        if "size" not in data and data.get("conv") != "standard":
            data["size"] = data.get("atoms")
        values: Dict[str, Any] = {}
        problems = []
        for name, kind in cls._KINDS.items():
            try:
                values[name] = _read(data, path, name, kind)
            except RecordError as error:
                values[name] = None
                problems.append(error)
        values["config_changes"] = values["config_changes"] or ()
        values["world_size"] = 1 if values["world_size"] is None else values["world_size"]
        return cls(**values), tuple(problems)


@dataclass(frozen=True)
class TrainingFailure:
    """``summary.json`` of a run stopped on a bad meta-loss: the error, the iteration it stopped
    at (``None`` if missing) and the processes that trained it (1 if missing)."""

    error: Optional[str] = None
    iteration: Optional[int] = None
    world_size: int = 1
    status: str = field(default="failed", init=False)

    def to_json(self) -> Dict[str, Any]:
        return {"status": self.status, "error": self.error, "iteration": self.iteration,
                "world_size": self.world_size}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], path: object = "summary.json") -> "TrainingFailure":
        data = _mapping(data, path)
        if data.get("status") != "failed":
            raise RecordError(path, "status", f"status is {data.get('status')!r}, not 'failed'")
        error = data.get("error")
        return cls(error=None if error is None else str(error), iteration=_read(data, path, "iteration", "int"),
                   world_size=_read(data, path, "world_size", "int", default=1))


def read_summary(data: Mapping[str, Any], path: object = "summary.json") -> Union[TrainingSummary, TrainingFailure]:
    """A summary.json's object as the record its ``status`` names."""
    status = _mapping(data, path).get("status")
    if status == "failed":
        return TrainingFailure.from_json(data, path)
    if status == "finished":
        return TrainingSummary.from_json(data, path)
    raise RecordError(path, "status", f"status is {status!r}, neither 'finished' nor 'failed'")


# ---------------------------------------------------------------------------------------------
# eval/*.json


@dataclass(frozen=True)
class EvaluationContext:
    """What an evaluation's number depends on besides the episodes: the BatchNorm used (a
    sentence), the adapted scope, the inner loop's step sizes (``inner_lr``: a number or a
    per-role mapping, ``learn_inner_lr``), where each task's head starts (``head_init``), when
    (``created``), the code (``source``) and the machine that computed it. All ``None`` in files
    from before they were recorded."""

    batchnorm: Optional[str] = None
    adapt: Optional[str] = None
    inner_lr: Any = None
    learn_inner_lr: Any = None
    head_init: Optional[str] = None
    created: Optional[str] = None
    source: Optional[Mapping[str, Any]] = None
    machine: Optional[Mapping[str, Any]] = None

    _KINDS = {"batchnorm": "str", "adapt": "str", "inner_lr": "any", "learn_inner_lr": "any", "head_init": "str",
              "created": "str",
              "source": "mapping", "machine": "mapping"}

    def to_json(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], path: object = "eval file") -> "EvaluationContext":
        return cls(**{name: _read(data, path, name, kind) for name, kind in cls._KINDS.items()})


@dataclass(frozen=True)
class EvaluationRecord:
    """``eval/<split>_<ways>way_<shots>shot.json``: accuracy on a fixed episode set. Only
    ``per_episode_accuracy`` (fractions in [0, 1], one per episode, in episode order) is required
    to read a file; every other field reads as ``None`` where missing (the file name gives split,
    ways and shots). ``mean_accuracy`` and ``ci95`` are :func:`mean_ci95` of it.

    ``episode_identities``: for each scored episode, ``{"index": i, "hash": h}``, its index in the
    episode set and :func:`fewshot_acdc.data.fixed.episode_identity` of what defines it (class ids,
    support and query image ids), so two files are paired episode by episode on what they scored,
    not on position alone. ``None`` in files from before they were recorded.
    ``protocol``: how the number was obtained when it was not the run's own protocol (``None``:
    the run's recorded inner_steps_eval, test_episodes and best checkpoint), e.g.
    ``"inner_steps_eval=0"``; such files are written under ``eval/protocols/``."""

    per_episode_accuracy: Tuple[float, ...]
    dataset: Optional[str] = None
    seed: Optional[int] = None
    split: Optional[str] = None
    ways: Optional[int] = None
    shots: Optional[int] = None
    queries: Optional[int] = None
    episodes: Optional[int] = None
    episode_set: Optional[str] = None
    inner_steps_eval: Optional[int] = None
    checkpoint: Optional[str] = None
    checkpoint_iteration: Optional[int] = None
    mean_accuracy: Optional[float] = None
    ci95: Optional[float] = None
    context: EvaluationContext = field(default_factory=EvaluationContext)
    episode_identities: Optional[Tuple[Tuple[int, str], ...]] = None
    protocol: Optional[str] = None

    _KINDS = {"dataset": "str", "seed": "int", "split": "str", "ways": "int", "shots": "int", "queries": "int",
              "episodes": "int", "episode_set": "str", "inner_steps_eval": "int", "checkpoint": "str",
              "checkpoint_iteration": "int", "mean_accuracy": "number", "ci95": "number", "protocol": "str"}
    _ORDER = ("dataset", "seed", "split", "ways", "shots", "queries", "episodes", "episode_set", "inner_steps_eval",
              "checkpoint", "checkpoint_iteration", "protocol", "mean_accuracy", "ci95", "per_episode_accuracy")

    @classmethod
    def from_accuracies(cls, accuracies: Sequence[float], **values: Any) -> "EvaluationRecord":
        """The record of scored episodes: ``episodes``, ``mean_accuracy`` and ``ci95`` from them."""
        mean, ci95, n = mean_ci95(accuracies)
        return cls(per_episode_accuracy=tuple(accuracies), episodes=n, mean_accuracy=mean, ci95=ci95, **values)

    def to_json(self) -> Dict[str, Any]:
        out = {name: getattr(self, name) for name in self._ORDER}
        out["per_episode_accuracy"] = list(self.per_episode_accuracy)
        if self.protocol is None:
            del out["protocol"]  # the run's own protocol: the files keep the keys they always had
        if self.episode_identities is not None:
            out["episode_identities"] = [{"index": index, "hash": digest} for index, digest in self.episode_identities]
        out.update(self.context.to_json())
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], path: object = "eval file") -> "EvaluationRecord":
        data = _mapping(data, path)
        accuracies = _read(data, path, "per_episode_accuracy", "fractions", required=True,
                           why=", so no CI can be computed")
        values = {name: _read(data, path, name, kind) for name, kind in cls._KINDS.items()}
        identities = _read_identities(data, path, len(accuracies))
        return cls(per_episode_accuracy=accuracies, context=EvaluationContext.from_json(data, path),
                   episode_identities=identities, **values)


def _read_identities(data: Mapping[str, Any], path: object, episodes: int) -> Optional[Tuple[Tuple[int, str], ...]]:
    """``episode_identities`` as ``((index, hash), ...)``: one per accuracy, each a JSON object with
    an integer ``index`` and a string ``hash``; ``None`` where the file has none."""
    listed = _read(data, path, "episode_identities", "list")
    if listed is None:
        return None
    name = "episode_identities"
    if len(listed) != episodes:
        raise RecordError(path, name, f"{name} has {len(listed)} entries for {episodes} per-episode accuracies")
    out = []
    for i, entry in enumerate(listed):
        if (not isinstance(entry, dict) or isinstance(entry.get("index"), bool) or not isinstance(entry.get("index"), int)
                or not isinstance(entry.get("hash"), str)):
            raise RecordError(path, name, f"{name} [{i}] = {entry!r} is not {{\"index\": int, \"hash\": str}}")
        out.append((entry["index"], entry["hash"]))
    return tuple(out)


@dataclass(frozen=True)
class BenchmarkRecord:
    """``eval/omniglot-all-runs.json``: Lake et al.'s 20-way within-alphabet one-shot benchmark.
    ``per_run_error_rate`` is, per run, the fraction of its test images assigned the wrong class;
    ``error_rate`` their mean. A file needs at least one of the two; every other field reads as
    ``None`` where missing (the provenance of files from before it was recorded)."""

    error_rate: Optional[float] = None
    per_run_error_rate: Optional[Tuple[float, ...]] = None
    benchmark: str = "omniglot-all-runs"
    runs: Optional[int] = None
    inner_steps_eval: Optional[int] = None
    checkpoint: Optional[str] = None
    checkpoint_iteration: Optional[int] = None
    seed: Optional[int] = None
    context: EvaluationContext = field(default_factory=EvaluationContext)

    _KINDS = {"benchmark": "str", "runs": "int", "error_rate": "number", "inner_steps_eval": "int",
              "checkpoint": "str", "checkpoint_iteration": "int", "seed": "int"}

    @classmethod
    def from_errors(cls, per_run_error_rate: Sequence[float], **values: Any) -> "BenchmarkRecord":
        errors = tuple(per_run_error_rate)
        return cls(error_rate=sum(errors) / len(errors), per_run_error_rate=errors, runs=len(errors), **values)

    def to_json(self) -> Dict[str, Any]:
        return {"benchmark": self.benchmark, "runs": self.runs, "error_rate": self.error_rate,
                "per_run_error_rate": None if self.per_run_error_rate is None else list(self.per_run_error_rate),
                "inner_steps_eval": self.inner_steps_eval, "checkpoint": self.checkpoint,
                "checkpoint_iteration": self.checkpoint_iteration, "seed": self.seed, **self.context.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], path: object = "omniglot-all-runs.json") -> "BenchmarkRecord":
        data = _mapping(data, path)
        values = {name: _read(data, path, name, kind) for name, kind in cls._KINDS.items()}
        values["benchmark"] = values["benchmark"] or "omniglot-all-runs"
        per_run = _read(data, path, "per_run_error_rate", "fractions")
        if per_run is None and values["error_rate"] is None:
            raise RecordError(path, "error_rate", "neither per_run_error_rate nor error_rate")
        return cls(per_run_error_rate=per_run, context=EvaluationContext.from_json(data, path), **values)
