"""Experiment grids that survive interruptions: one run directory per cell, resumed where it stopped.

A grid is a base config plus a list of :class:`Cell` (config overrides and the shot counts to
evaluate). :func:`run_grid` trains each cell (or resumes it from ``checkpoints/last.pt``),
evaluates it on the fixed test episodes of every shot count, and *records* it: the run files
without checkpoints (config, metrics, summary, eval, provenance) are copied to a results folder
that is committed. A cell whose record is complete is skipped, so a grid started on a fresh
clone continues where the last session's commits left it; a cell with a checkpoint in the work
folder resumes. Every cell of a shot count is scored on the same episode set (the set's seed is
fixed), so the results module can pair them.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ..config import load_config
from .directory import RunDirectory

RECORDED_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "provenance.jsonl")


# Benchmarks a cell can be scored on besides its test episodes: name -> the eval file it writes.
BENCHMARK_FILES = {"omniglot-all-runs": "omniglot-all-runs.json"}


@dataclass(frozen=True)
class Cell:
    """One grid cell: its directory name, the config overrides, the shot counts it is tested at
    (on the test split's fixed episodes) and the benchmarks it is scored on (BENCHMARK_FILES)."""
    name: str
    overrides: Dict[str, object]
    eval_shots: Tuple[int, ...] = (1, 5)
    eval_options: Dict[str, object] = field(default_factory=dict)
    benchmarks: Tuple[str, ...] = ()
    pretraining: bool = False  # trained by pretrain.py's loop (runs.pretraining), not meta-trained

    def __post_init__(self) -> None:
        unknown = [b for b in self.benchmarks if b not in BENCHMARK_FILES]
        if unknown:
            raise ValueError(f"cell {self.name}: unknown benchmark(s) {', '.join(unknown)}; "
                             f"known: {', '.join(BENCHMARK_FILES)}")


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def training_finished(run_dir: Path) -> bool:
    summary = _read_json(Path(run_dir) / "summary.json")
    return bool(summary) and summary.get("status") == "finished"


def missing_evaluations(run_dir: Path, cell: Cell, ways: int) -> List[int]:
    run = RunDirectory(run_dir)
    return [shots for shots in cell.eval_shots if not run.eval_file("test", ways, shots).is_file()]


def missing_benchmarks(run_dir: Path, cell: Cell) -> List[str]:
    eval_dir = RunDirectory(run_dir).eval_dir
    return [name for name in cell.benchmarks if not (eval_dir / BENCHMARK_FILES[name]).is_file()]


def cell_state(work_dir: Path, record_dir: Optional[Path], cell: Cell, ways: int) -> str:
    """``recorded`` (done), ``evaluate`` (trained, evaluations missing), ``resume`` or ``new``."""
    if (record_dir is not None and training_finished(record_dir) and not missing_evaluations(record_dir, cell, ways)
            and not missing_benchmarks(record_dir, cell)):
        return "recorded"
    if training_finished(work_dir):
        return "evaluate"
    return "resume" if RunDirectory(work_dir).checkpoint("last").is_file() else "new"


def record_run(run_dir: Path, record_dir: Path) -> None:
    """Copy a run's files, checkpoints excluded, to ``record_dir`` (replacing an older record)."""
    run_dir, record_dir = Path(run_dir), Path(record_dir)
    if record_dir.exists():
        shutil.rmtree(record_dir)
    (record_dir / "eval").mkdir(parents=True)
    for name in RECORDED_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, record_dir / name)
    for path in RunDirectory(run_dir).iter_eval_files():
        shutil.copy2(path, record_dir / "eval" / path.name)


def run_grid(
    cells: Sequence[Cell],
    base_config: Union[str, Path],
    work_root: Union[str, Path],
    *,
    record_root: Optional[Union[str, Path]] = None,
    common: Optional[Dict[str, object]] = None,
    dry_run: bool = False,
    progress: bool = False,
    on_recorded: Optional[Callable[[Cell, Path], None]] = None,
    log: Callable[[str], None] = print,
    allow_dirty: bool = False,
) -> Dict[str, str]:
    """Bring every cell to ``recorded``; returns ``{cell name: state before this call}``.

    ``common`` overrides apply to every cell (e.g. ``device``, ``data_root``); ``on_recorded``
    runs after each cell's record is written (e.g. to commit it). A grid records results, so it
    refuses to start when the package code has uncommitted changes unless ``allow_dirty`` (or
    ``FEWSHOT_ALLOW_DIRTY=1``): checked once, before the first cell, and every cell records the
    revision this process imported (:func:`.provenance.process_revision`).
    """
    from . import provenance
    if not dry_run:
        provenance.check_recordable("grid of training runs", allow_dirty)
    from .evaluation import evaluate_omniglot_all_runs, evaluate_run
    from .pretraining import pretrain
    from .training import train
    benchmark_runners = {"omniglot-all-runs": evaluate_omniglot_all_runs}
    work_root = Path(work_root)
    record_root = Path(record_root) if record_root is not None else None
    states: Dict[str, str] = {}
    for index, cell in enumerate(cells, 1):
        work_dir = work_root / cell.name
        record_dir = record_root / cell.name if record_root is not None else None
        config = load_config(base_config, {**cell.overrides, **(common or {})})
        state = cell_state(work_dir, record_dir, cell, config.ways)
        states[cell.name] = state
        log(f"[{index}/{len(cells)}] {cell.name}: {state}")
        if dry_run or state == "recorded":
            continue
        if config.threads is not None:  # what the CLI does for one run; a grid runs its cells in-process
            import torch
            torch.set_num_threads(config.threads)
        if state in ("new", "resume"):
            trainer = pretrain if cell.pretraining else train
            trainer(config, work_dir, resume=state == "resume", progress=progress, allow_dirty=allow_dirty)
        missing = missing_evaluations(work_dir, cell, config.ways)
        if missing:
            evaluate_run(work_dir, shots=missing, device=config.device, progress=progress, allow_dirty=allow_dirty,
                         **cell.eval_options)
        for benchmark in missing_benchmarks(work_dir, cell):
            benchmark_runners[benchmark](work_dir, device=config.device, allow_dirty=allow_dirty)
        if record_dir is not None:
            record_run(work_dir, record_dir)
            if on_recorded is not None:
                on_recorded(cell, record_dir)
    return states


def cells_product(name: Callable[[Dict[str, object]], str], axes: Dict[str, Iterable[object]],
                  keep: Callable[[Dict[str, object]], bool] = lambda overrides: True,
                  eval_shots: Tuple[int, ...] = (1, 5), extra: Callable[[Dict[str, object]], Dict[str, object]] = None
                  ) -> List[Cell]:
    """The cells of every combination of ``axes`` values that ``keep`` accepts, in axis order;
    ``extra(overrides)`` adds overrides that depend on the combination."""
    import itertools
    keys = list(axes)
    cells = []
    for values in itertools.product(*(list(axes[key]) for key in keys)):
        overrides = dict(zip(keys, values))
        if not keep(overrides):
            continue
        if extra is not None:
            overrides.update(extra(overrides))
        cells.append(Cell(name(overrides), overrides, eval_shots))
    return cells
