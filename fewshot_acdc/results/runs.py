"""Finding and reading run directories (the contract is ``docs/run_directory.md``).

Every run directory that is found becomes one :class:`RunRecord`, whatever state it is in:
a record always carries a ``status`` and, when something is wrong, human-readable reasons in
``problems`` (things that make (part of) the run unusable) and ``warnings`` (oddities that do not).
Nothing here raises on a malformed run; the report lists it instead.

Statuses
    ``ok``             finished (``summary.json`` says ``"finished"``) with at least one valid
                       ``eval/<split>_<ways>way_<shots>shot.json``
    ``no-evaluation``  finished, but no valid evaluation file (none written, or all unreadable)
    ``unfinished``     no ``summary.json`` yet (or a status other than finished/failed)
    ``failed``         ``summary.json`` says ``"failed"``
    ``corrupt``        ``summary.json`` cannot be read or is not a JSON object
    ``unidentified``   finished, but backbone / conv / adapt cannot be determined
    ``missing``        a path given on the command line that does not exist or holds no runs
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..runs.record import (SUMMARY_COSTS, SUMMARY_IDENTITY, BenchmarkRecord, EvaluationRecord, RecordError,
                           TrainingFailure, TrainingSummary)
from ..vocabulary import ACDC_SHARINGS, CONV_KIND_TABLE, conv_for_acdc
from .stats import mean_ci95

#: The stored mean_accuracy / ci95 are checked against the values recomputed from
#: per_episode_accuracy. Evaluators may round what they store, so absolute differences up to
#: this (accuracy as a fraction, i.e. 0.1 percentage points) pass silently; larger ones are
#: flagged as warnings (the report always shows the recomputed values).
STORED_TOLERANCE = 1e-3

EVAL_FILE_RE = re.compile(r"^(?P<split>.+)_(?P<ways>\d+)way_(?P<shots>\d+)shot\.json$")
OMNIGLOT_FILE = "omniglot-all-runs.json"

STATUS_OK = "ok"
STATUS_NO_EVAL = "no-evaluation"
STATUS_UNFINISHED = "unfinished"
STATUS_FAILED = "failed"
STATUS_CORRUPT = "corrupt"
STATUS_UNIDENTIFIED = "unidentified"
STATUS_MISSING = "missing"

#: Identity fields read from summary.json first and config.yaml second (the summary's fields,
#: :data:`fewshot_acdc.runs.record.SUMMARY_IDENTITY`).
IDENTITY_FIELDS = SUMMARY_IDENTITY
REQUIRED_IDENTITY = ("backbone", "conv", "adapt")
#: What a run cost, read from summary.json (:data:`fewshot_acdc.runs.record.SUMMARY_COSTS`).
SUMMARY_NUMBERS = SUMMARY_COSTS


def is_acdc_conv(conv: str | None) -> bool:
    """An ACDC conv kind (``acdc-net``, ``acdc-g-block`` ...); unknown names are not."""
    kind = CONV_KIND_TABLE.get(str(conv).lower()) if conv else None
    return kind is not None and kind.is_acdc


def is_decomposed_conv(conv: str | None) -> bool:
    """Every conv kind but ``standard``: ACDC, BasisConv (``basis``), DCF (``dcf``), learnable
    repetition (``repeat-*``). They have a size (ACDC atoms, BasisConv rank, DCF Fourier-Bessel
    atoms, repetition base width); for plain convolutions size / group size are meaningless."""
    return bool(conv) and str(conv).lower() not in ("standard", "none")


@dataclass(frozen=True)
class RunIdentity:
    """What a run trained. Strings are lower-cased; ``size`` is the conv kind's size (ACDC atoms
    m, BasisConv rank r, DCF Fourier-Bessel atoms K, repetition base width b), ``None`` for
    standard convolutions; ``group_size`` is ``None`` for non-grouped ones (configs may carry
    defaults for them that do not apply)."""

    dataset: str | None = None
    backbone: str | None = None
    conv: str | None = None
    size: int | None = None
    group_size: int | None = None
    adapt: str | None = None
    first_order: bool = False
    ways: int | None = None
    shots: int | None = None
    head_init: str = "per-class"  # runs from before head_init was a choice started per class

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in IDENTITY_FIELDS}


@dataclass
class EvalResult:
    """One ``eval/<split>_<ways>way_<shots>shot.json`` with statistics recomputed from
    ``per_episode_accuracy`` (``mean`` and ``ci95`` are fractions; the stored ones are kept
    alongside for reference)."""

    file: str
    split: str
    ways: int
    shots: int
    per_episode_accuracy: np.ndarray
    mean: float
    ci95: float
    episodes: int
    episode_set: str | None
    dataset: str | None = None
    queries: int | None = None
    inner_steps_eval: int | None = None
    checkpoint: str | None = None
    stored_mean: float | None = None
    stored_ci95: float | None = None
    stored_episodes: int | None = None
    warnings: list[str] = field(default_factory=list)
    #: ``(index, hash)`` per episode (``episode_identities`` of the file), None in older files.
    episode_identities: tuple[tuple[int, str], ...] | None = None
    #: How this number differs from the run's own protocol, as the file or the reader found it
    #: (e.g. ``"inner_steps_eval=0"``); None: the run's own.
    protocol_note: str | None = None

    @property
    def protocol(self) -> tuple[str, int, int]:
        return (self.split, self.ways, self.shots)

    def to_dict(self, include_episodes: bool = True) -> dict[str, Any]:
        d = {
            "file": self.file,
            "split": self.split,
            "ways": self.ways,
            "shots": self.shots,
            "dataset": self.dataset,
            "queries": self.queries,
            "episodes": self.episodes,
            "episode_set": self.episode_set,
            "inner_steps_eval": self.inner_steps_eval,
            "checkpoint": self.checkpoint,
            "protocol": self.protocol_note,
            "episode_identities": self.episode_identities is not None,
            "mean_accuracy": self.mean,
            "ci95": self.ci95,
            "stored_mean_accuracy": self.stored_mean,
            "stored_ci95": self.stored_ci95,
            "stored_episodes": self.stored_episodes,
            "warnings": list(self.warnings),
        }
        if include_episodes:
            d["per_episode_accuracy"] = [float(x) for x in self.per_episode_accuracy]
        return d


@dataclass
class OmniglotResult:
    """``eval/omniglot-all-runs.json`` (Lake et al.'s 20-way within-alphabet benchmark)."""

    file: str
    error_rate: float  # mean of per_run_error_rate when present, else the stored value
    runs: int | None
    per_run_error_rate: list[float] | None
    stored_error_rate: float | None
    inner_steps_eval: int | None = None
    checkpoint: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "error_rate": self.error_rate,
            "runs": self.runs,
            "per_run_error_rate": self.per_run_error_rate,
            "stored_error_rate": self.stored_error_rate,
            "inner_steps_eval": self.inner_steps_eval,
            "checkpoint": self.checkpoint,
            "warnings": list(self.warnings),
        }


@dataclass
class RunRecord:
    """Everything the results module knows about one run directory."""

    path: str  # absolute path
    name: str  # short display name (unique within one collection)
    status: str
    identity: RunIdentity = field(default_factory=RunIdentity)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    config: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None  # summary.json as read
    training: TrainingSummary | None = None  # ... as the typed record, when it says finished
    unreadable: set[str] = field(default_factory=set)  # summary fields of the wrong type (ignored)
    evals: dict[tuple[str, int, int], EvalResult] = field(default_factory=dict)
    omniglot: OmniglotResult | None = None
    total_parameters: int | None = None
    adapted_parameters: int | None = None
    seconds_per_meta_step: float | None = None
    peak_memory_mb: float | None = None
    last_iteration: int | None = None  # from metrics.jsonl, read only for unfinished runs
    target_iterations: int | None = None

    def get_eval(self, split: str, ways: int, shots: int) -> EvalResult | None:
        return self.evals.get((split, int(ways), int(shots)))

    def to_dict(self, include_episodes: bool = True) -> dict[str, Any]:
        return {
            "path": self.path,
            "name": self.name,
            "status": self.status,
            "identity": self.identity.to_dict(),
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "total_parameters": self.total_parameters,
            "adapted_parameters": self.adapted_parameters,
            "seconds_per_meta_step": self.seconds_per_meta_step,
            "peak_memory_mb": self.peak_memory_mb,
            "last_iteration": self.last_iteration,
            "target_iterations": self.target_iterations,
            "evals": [
                e.to_dict(include_episodes)
                for _, e in sorted(self.evals.items(), key=lambda kv: kv[0])
            ],
            "omniglot": self.omniglot.to_dict() if self.omniglot else None,
        }


# ---------------------------------------------------------------------------------------------
# discovery


def is_run_dir(path: Path) -> bool:
    """A run directory is any directory holding ``config.yaml`` or ``summary.json``."""
    return path.is_dir() and ((path / "config.yaml").exists() or (path / "summary.json").exists())


def is_pretraining_run(path: Path) -> bool:
    """A supervised pretraining run (pretrain.py): its summary.json or config says so."""
    summary, _ = _read_json_mapping(path / "summary.json") if (path / "summary.json").exists() else (None, None)
    if summary is not None:
        return summary.get("kind") == "pretraining"
    # Unfinished: its provenance's first line names the kind.
    try:
        with open(path / "provenance.jsonl", encoding="utf-8") as handle:
            return '"kind": "pretraining"' in handle.readline()
    except OSError:
        return False


def discover_runs(path: str | os.PathLike) -> list[Path]:
    """Run directories at or below ``path`` (sorted; nothing below a run directory is searched,
    so ``eval/`` and ``checkpoints/`` are never mistaken for runs)."""
    root = Path(path)
    if is_run_dir(root):
        return [root]
    found: list[Path] = []
    if not root.is_dir():
        return found
    for dirpath, dirnames, _ in os.walk(root):
        dirnames.sort()
        here = Path(dirpath)
        if here != root and is_run_dir(here):
            found.append(here)
            dirnames[:] = []  # do not descend into a run
    return sorted(found)


def collect_runs(paths: Iterable[str | os.PathLike] | str | os.PathLike) -> list[RunRecord]:
    """Load every run directory given in ``paths`` or found below them.

    Each entry may be a run directory or a parent directory. A path that does not exist, or a
    parent with no run below it, becomes a record with status ``missing`` so that it shows up in
    the report. The same directory reached twice is loaded once.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    records: list[RunRecord] = []
    seen: set[str] = set()
    for p in paths:
        p = Path(p)
        if not p.exists():
            records.append(_missing(p, f"path does not exist: {p}"))
            continue
        runs = discover_runs(p)
        if not runs:
            records.append(
                _missing(p, f"no run directory (config.yaml or summary.json) at or below {p}")
            )
            continue
        base = p.resolve()
        for run in runs:
            key = str(run.resolve())
            if key in seen or is_pretraining_run(run):
                continue  # pretraining runs have their own table (results.pretraining)
            seen.add(key)
            if run == p:
                name = base.name or str(base)
            else:
                rel = run.resolve().relative_to(base).as_posix()
                name = f"{base.name}/{rel}" if base.name else rel
            records.append(load_run(run, name=name))
    _make_names_unique(records)
    return records


def _make_names_unique(records: list[RunRecord]) -> None:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.name] = counts.get(r.name, 0) + 1
    for r in records:
        if counts[r.name] > 1:
            r.name = r.path


def _missing(path: Path, reason: str) -> RunRecord:
    return RunRecord(
        path=str(path.absolute()), name=str(path), status=STATUS_MISSING, problems=[reason]
    )


# ---------------------------------------------------------------------------------------------
# loading one run


def load_run(path: str | os.PathLike, name: str | None = None) -> RunRecord:
    """Read one run directory into a :class:`RunRecord` (never raises for bad contents)."""
    run = Path(path)
    rec = RunRecord(
        path=str(run.resolve()) if run.exists() else str(run.absolute()),
        name=name or run.resolve().name,
        status=STATUS_UNFINISHED,
    )
    if not run.is_dir():
        rec.status = STATUS_MISSING
        rec.problems.append(f"not a directory: {run}")
        return rec

    # config.yaml: optional for the table (summary.json repeats the identity), but read it.
    cfg_path = run / "config.yaml"
    if cfg_path.exists():
        rec.config, err = _read_yaml_mapping(cfg_path)
        if err:
            rec.warnings.append(f"config.yaml: {err}")
    else:
        rec.warnings.append("config.yaml missing")

    # summary.json decides finished / failed / unfinished / corrupt.
    sum_path = run / "summary.json"
    summary_status = None
    if sum_path.exists():
        rec.summary, err = _read_json_mapping(sum_path)
        if err:
            rec.status = STATUS_CORRUPT
            rec.problems.append(f"corrupt: summary.json: {err}")
        else:
            summary_status = rec.summary.get("status")
            if summary_status == "finished":
                rec.status = STATUS_OK  # refined below
                rec.training, problems = TrainingSummary.read_fields(rec.summary, "summary.json")
                for problem in problems:
                    rec.unreadable.add(problem.field)
                    rec.warnings.append(f"summary.json: {problem.detail}; ignored")
            elif summary_status == "failed":
                rec.status = STATUS_FAILED
                failure = _read_failure(rec.summary, rec)
                error, at = failure.error, failure.iteration
                rec.problems.append(
                    "failed: training stopped"
                    + (f" at iteration {at}" if at is not None else "")
                    + " with an error"
                    + (f": {error}" if error not in (None, "") else " (no error message)")
                )
            else:
                rec.status = STATUS_UNFINISHED
                rec.problems.append(
                    f"unfinished: summary.json has status {summary_status!r}, not 'finished'"
                )
    else:
        rec.status = STATUS_UNFINISHED

    rec.identity = _resolve_identity(rec)
    _read_summary_numbers(rec)

    if rec.status == STATUS_UNFINISHED and rec.summary is None:
        rec.target_iterations = _as_int(_lookup(rec.config, "iterations"))
        rec.last_iteration = _last_logged_iteration(run / "metrics.jsonl", rec)
        progress = ""
        if rec.last_iteration is not None:
            progress = f"; last logged iteration {rec.last_iteration}"
            if rec.target_iterations:
                progress += f" of {rec.target_iterations}"
        rec.problems.append(f"unfinished: no summary.json (training has not finished{progress})")

    _read_evals(run, rec)

    if rec.status == STATUS_OK:
        missing = [f for f in REQUIRED_IDENTITY if getattr(rec.identity, f) is None]
        if missing:
            rec.status = STATUS_UNIDENTIFIED
            rec.problems.append(
                "cannot identify the run: no "
                + ", ".join(missing)
                + " in summary.json or config.yaml"
            )
        elif not rec.evals:
            rec.status = STATUS_NO_EVAL
            if not (run / "eval").is_dir():
                rec.problems.append("no evaluation: eval/ directory missing")
            elif any(p.startswith("eval/") for p in rec.problems):
                rec.problems.append("no evaluation: no readable evaluation file")
            else:
                rec.problems.append("no evaluation: no eval/<split>_<ways>way_<shots>shot.json")
    return rec


def _read_json_mapping(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 ({e})"
    except OSError as e:
        return None, f"cannot read ({e.strerror or e})"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"invalid JSON ({e})"
    if not isinstance(data, dict):
        return None, f"expected a JSON object, got {type(data).__name__}"
    return data, None


def _lenient_yaml_loader():
    """A SafeLoader that reads tagged nodes (``!!python/tuple``, ``!Path``, ...) as plain
    lists / mappings / strings instead of failing, so a config dumped with tags still loads."""
    import yaml

    class LenientLoader(yaml.SafeLoader):
        pass

    def construct_any(loader, tag_suffix, node):
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_scalar(node)

    LenientLoader.add_multi_constructor("", construct_any)
    return LenientLoader


def _read_yaml_mapping(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.load(text, Loader=_lenient_yaml_loader())  # noqa: S506 - safe subclass
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 ({e})"
    except OSError as e:
        return None, f"cannot read ({e.strerror or e})"
    except yaml.YAMLError as e:
        msg = " ".join(str(e).split())
        return None, f"invalid YAML ({msg})"
    if data is None:
        return {}, "empty"
    if not isinstance(data, dict):
        return None, f"expected a mapping, got {type(data).__name__}"
    return data, None


def _lookup(mapping: dict[str, Any] | None, key: str) -> Any:
    """``mapping[key]``, or the first ``mapping[section][key]`` one level down (so a config that
    nests its fields, e.g. ``model: {backbone: ...}``, is understood too)."""
    if not mapping:
        return None
    if key in mapping:
        return mapping[key]
    for value in mapping.values():
        if isinstance(value, dict) and key in value:
            return value[key]
    return None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _norm_identity_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in ("size", "group_size", "ways", "shots"):
        return _as_int(value)
    if name == "first_order":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        return None
    text = str(value).strip()
    return text.lower() if text else None


def _conv_from(mapping: dict[str, Any] | None) -> Any:
    """``conv`` as in summary.json and config.yaml, or, for config.yaml files written before
    ``conv`` was the one key, derived from their ``acdc`` sharing scope (``none`` -> ``standard``,
    ``net`` -> ``acdc-net``, ...)."""
    conv = _lookup(mapping, "conv")
    if conv is not None:
        return conv
    acdc = _lookup(mapping, "acdc")
    if acdc is None or isinstance(acdc, (dict, list)):
        return None
    acdc = str(acdc).strip().lower()
    if acdc in ("false", ""):
        return "standard"
    if acdc in ACDC_SHARINGS:
        return conv_for_acdc(acdc)
    return acdc if acdc.startswith("acdc") else f"acdc-{acdc}"


def _config_size(config: dict[str, Any] | None, conv: str | None) -> Any:
    """The conv kind's size in a config.yaml: under the kind's own key (``rank``, ``bessel_atoms``
    ...), or under ``atoms``, which sized every kind before each had its own name."""
    kind = CONV_KIND_TABLE.get(conv) if conv else None
    own = _lookup(config, kind.size_key) if kind is not None and kind.size_key else None
    return own if own is not None else _lookup(config, "atoms")


def _resolve_identity(rec: RunRecord) -> RunIdentity:
    """The identity from the typed summary (:class:`TrainingSummary`), completed from config.yaml,
    which is read leniently (nested sections, older keys)."""
    values: dict[str, Any] = {}
    config_conv = _norm_identity_value("conv", _conv_from(rec.config))
    for name in IDENTITY_FIELDS:
        from_summary = _norm_identity_value(name, getattr(rec.training, name)) if rec.training else None
        if name == "conv":
            from_config = config_conv
        elif name == "size":
            from_config = _norm_identity_value(name, _config_size(rec.config, config_conv))
        else:
            from_config = _norm_identity_value(name, _lookup(rec.config, name))
        if from_summary is not None and from_config is not None and from_summary != from_config:
            rec.warnings.append(
                f"summary.json says {name}={from_summary!r} but config.yaml says "
                f"{from_config!r}; using summary.json"
            )
        values[name] = from_summary if from_summary is not None else from_config
    if not is_decomposed_conv(values["conv"]):
        values["size"] = None
    if not is_acdc_conv(values["conv"]):
        values["group_size"] = None
    values["first_order"] = bool(values["first_order"])
    values["head_init"] = values["head_init"] or "per-class"
    return RunIdentity(**values)


def _read_summary_numbers(rec: RunRecord) -> None:
    """The costs of a finished run, from its typed summary (fields of the wrong type were
    reported when it was read)."""
    if rec.training is None:
        return
    for name in SUMMARY_NUMBERS:
        value = getattr(rec.training, name)
        if value is None:
            if rec.status == STATUS_OK and name not in rec.unreadable:
                rec.warnings.append(f"summary.json has no {name}")
            continue
        if value < 0:
            rec.warnings.append(f"summary.json: {name} is negative ({value!r}); ignored")
            continue
        setattr(rec, name, value)


def _read_failure(summary: dict[str, Any], rec: RunRecord) -> TrainingFailure:
    try:
        return TrainingFailure.from_json(summary, "summary.json")
    except RecordError as error:
        rec.warnings.append(f"summary.json: {error.detail}; ignored")
        return TrainingFailure(error=summary.get("error"))


def _last_logged_iteration(path: Path, rec: RunRecord) -> int | None:
    if not path.exists():
        return None
    last = None
    bad = 0
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    bad += 1
                    continue
                it = _as_int(obj.get("iteration")) if isinstance(obj, dict) else None
                if it is not None:
                    last = it if last is None else max(last, it)
    except OSError as e:
        rec.warnings.append(f"metrics.jsonl: cannot read ({e.strerror or e})")
        return None
    if bad:
        rec.warnings.append(f"metrics.jsonl: {bad} unreadable line(s) skipped")
    return last


def _read_evals(run: Path, rec: RunRecord) -> None:
    eval_dir = run / "eval"
    if not eval_dir.is_dir():
        return
    for f in sorted(eval_dir.iterdir()):
        if not f.is_file() or f.suffix != ".json":
            continue
        rel = f"eval/{f.name}"
        if f.name == OMNIGLOT_FILE:
            rec.omniglot = _read_omniglot(f, rel, rec)
            continue
        m = EVAL_FILE_RE.match(f.name)
        if not m:
            rec.warnings.append(f"{rel}: not an <split>_<ways>way_<shots>shot.json name; ignored")
            continue
        result = _read_eval(f, rel, m.group("split"), int(m.group("ways")), int(m.group("shots")), rec)
        if result is not None:
            rec.evals[result.protocol] = result


def _read_eval(
    path: Path, rel: str, split: str, ways: int, shots: int, rec: RunRecord
) -> EvalResult | None:
    data, err = _read_json_mapping(path)
    if err:
        rec.problems.append(f"{rel}: corrupt: {err}")
        return None
    try:
        record = EvaluationRecord.from_json(data, rel)
    except RecordError as error:
        rec.problems.append(f"{rel}: {error.detail}; ignored")
        return None
    for key, expected in (("split", split), ("ways", ways), ("shots", shots)):
        stored = getattr(record, key)
        if stored is not None and stored != expected:
            rec.problems.append(
                f"{rel}: file name says {key}={expected!r} but the file says {stored!r}; ignored"
            )
            return None
    acc = np.asarray(record.per_episode_accuracy, dtype=float)
    mean, ci, n = mean_ci95(acc)
    result = EvalResult(
        file=rel,
        split=split,
        ways=ways,
        shots=shots,
        per_episode_accuracy=acc,
        mean=mean,
        ci95=ci,
        episodes=n,
        episode_set=record.episode_set or None,
        dataset=_norm_identity_value("dataset", record.dataset),
        queries=record.queries,
        inner_steps_eval=record.inner_steps_eval,
        checkpoint=record.checkpoint,
        stored_mean=_as_number(record.mean_accuracy),
        stored_ci95=_as_number(record.ci95),
        stored_episodes=record.episodes,
        episode_identities=record.episode_identities,
        protocol_note=record.protocol or _protocol_difference(record, rec.config),
    )
    if result.protocol_note is not None:
        result.warnings.append(
            f"{rel}: scored with {result.protocol_note}, not the run's recorded protocol"
        )
    if result.stored_episodes is not None and result.stored_episodes != n:
        result.warnings.append(
            f"{rel}: episodes={result.stored_episodes} but per_episode_accuracy has {n} "
            f"values; using {n}"
        )
    if result.stored_mean is not None and abs(result.stored_mean - mean) > STORED_TOLERANCE:
        result.warnings.append(
            f"{rel}: stored mean_accuracy {result.stored_mean:.4f} differs from the mean of "
            f"per_episode_accuracy {mean:.4f}; using the recomputed value"
        )
    if result.stored_ci95 is not None and abs(result.stored_ci95 - ci) > STORED_TOLERANCE:
        result.warnings.append(
            f"{rel}: stored ci95 {result.stored_ci95:.4f} differs from 1.96*std/sqrt(n) = "
            f"{ci:.4f}; using the recomputed value"
        )
    if result.episode_set is None:
        result.warnings.append(f"{rel}: no episode_set recorded, so it cannot be paired")
    if (
        result.dataset is not None
        and rec.identity.dataset is not None
        and result.dataset != rec.identity.dataset
    ):
        result.warnings.append(
            f"{rel}: evaluated on dataset {result.dataset!r} but the run trained on "
            f"{rec.identity.dataset!r}"
        )
    rec.warnings.extend(result.warnings)
    return result


def _protocol_difference(record: EvaluationRecord, config: dict[str, Any] | None) -> str | None:
    """What an eval file's protocol differs in from the run's config.yaml (files written before
    evaluations under another protocol got files of their own replaced the run's): its inner steps
    and its checkpoint (the episode count is shown with every number). None when nothing, or
    nothing to compare."""
    parts = []
    recorded_steps = _as_int(_lookup(config, "inner_steps_eval"))
    if record.inner_steps_eval is not None and recorded_steps is not None and record.inner_steps_eval != recorded_steps:
        parts.append(f"inner_steps_eval={record.inner_steps_eval}")
    if record.checkpoint not in (None, "best"):
        parts.append(f"checkpoint={record.checkpoint}")
    return ", ".join(parts) or None


def _read_omniglot(path: Path, rel: str, rec: RunRecord) -> OmniglotResult | None:
    data, err = _read_json_mapping(path)
    if err:
        rec.problems.append(f"{rel}: corrupt: {err}")
        return None
    try:
        record = BenchmarkRecord.from_json(data, rel)
    except RecordError as error:
        rec.problems.append(f"{rel}: {error.detail}; ignored")
        return None
    stored = _as_number(record.error_rate)
    per_run_list = None if record.per_run_error_rate is None else [float(x) for x in record.per_run_error_rate]
    value = float(np.mean(per_run_list)) if per_run_list else float(stored)
    result = OmniglotResult(
        file=rel,
        error_rate=value,
        runs=record.runs,
        per_run_error_rate=per_run_list,
        stored_error_rate=stored,
        inner_steps_eval=record.inner_steps_eval,
        checkpoint=record.checkpoint,
    )
    if per_run_list and stored is not None and abs(stored - value) > STORED_TOLERANCE:
        result.warnings.append(
            f"{rel}: stored error_rate {stored:.4f} differs from the mean of per_run_error_rate "
            f"{value:.4f}; using the recomputed value"
        )
    if per_run_list and result.runs is not None and result.runs != len(per_run_list):
        result.warnings.append(
            f"{rel}: runs={result.runs} but per_run_error_rate has {len(per_run_list)} values"
        )
    rec.warnings.extend(result.warnings)
    return result

