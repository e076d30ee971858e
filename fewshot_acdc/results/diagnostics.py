"""Why a run does (not) learn: its training diagnostics over meta-iterations, as one figure.

``metrics.jsonl`` lines carry, averaged over each log interval (:mod:`fewshot_acdc.runs.training`):
the support loss before each inner update and after the last (``support_loss_by_step``,
``support_loss_after``), the meta-gradient norm per parameter role (``grad_norm_by_role``) and
the inner-loop gradient norm per role and step (``inner_grad_norm_by_role``). Four panels:

1. meta-loss (query loss after adaptation) and support loss before/after adaptation: an inner loop
   that does not lower the support loss has too small a step size; one that drives it to 0 while
   the query loss stays at ln(ways) memorises the support set;
2. training and validation accuracy, in percent;
3. inner gradient norm per role (first step, log scale): roles orders of magnitude apart want
   step sizes orders of magnitude apart (``inner_lr`` per role);
4. meta-gradient norm per role (log scale).

    python -m fewshot_acdc.results.diagnostics runs/<run> --out diagnostics.png

also writes the numbers behind the figure as ``<out>.csv``.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union


def read_metrics(run_dir: Union[str, Path]) -> List[Dict[str, object]]:
    """The metrics lines of a run; a torn line (an interrupted write) ends the readable part."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a run directory, or the run logged nothing yet")
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            print(f"note: {path} line {number} is not JSON; using the {len(lines)} lines before it", file=sys.stderr)
            break
    return lines


def curves(metrics: Sequence[Dict[str, object]]) -> Dict[str, Dict[str, List[Optional[float]]]]:
    """``{panel: {series: values}}`` aligned with ``iteration``; ``None`` where a line lacks a value."""
    iterations = [float(line["iteration"]) for line in metrics]

    def series(get) -> List[Optional[float]]:
        values = []
        for line in metrics:
            try:
                value = get(line)
            except (KeyError, IndexError, TypeError):
                value = None
            values.append(None if value is None else float(value))
        return values

    roles = sorted({role for line in metrics for role in line.get("inner_grad_norm_by_role", {})})
    meta_roles = sorted({role for line in metrics for role in line.get("grad_norm_by_role", {})})
    return {
        "iteration": {"iteration": iterations},
        "loss": {"meta-loss (query, adapted)": series(lambda line: line["meta_loss"]),
                 "support, before adaptation": series(lambda line: line["support_loss_by_step"][0]),
                 "support, after adaptation": series(lambda line: line["support_loss_after"])},
        "accuracy": {"train (query, adapted)": series(lambda line: 100 * line["train_accuracy"]),
                     "validation": series(lambda line: 100 * line["val_accuracy"] if "val_accuracy" in line else None)},
        "inner_grad_norm": {role: series(lambda line, role=role: line["inner_grad_norm_by_role"][role][0])
                            for role in roles},
        "meta_grad_norm": {role: series(lambda line, role=role: line["grad_norm_by_role"][role])
                           for role in meta_roles},
    }


PANELS = (("loss", "loss", False), ("accuracy", "accuracy (%)", False),
          ("inner_grad_norm", "inner gradient norm, step 1", True), ("meta_grad_norm", "meta-gradient norm", True))


def plot_diagnostics(run_dir: Union[str, Path], out: Union[str, Path]) -> Path:
    """Draw the four panels of ``run_dir`` into ``out`` (PNG or SVG) and the numbers into ``out``.csv."""
    from matplotlib.figure import Figure
    data = curves(read_metrics(run_dir))
    iterations = data["iteration"]["iteration"]
    figure = Figure(figsize=(11, 7), constrained_layout=True)
    axes = figure.subplots(2, 2)
    for axis, (key, label, log) in zip(axes.flat, PANELS):
        drawn = 0
        for name, values in data[key].items():
            points = [(x, y) for x, y in zip(iterations, values) if y is not None and (not log or y > 0)]
            if points:
                axis.plot(*zip(*points), marker="o" if len(points) < 30 else None, markersize=3, label=name)
                drawn += 1
        if log and drawn:
            axis.set_yscale("log")
        if key == "accuracy":
            axis.set_ylim(0, 100)
        axis.set_xlabel("meta-iteration")
        axis.set_ylabel(label)
        if drawn:
            axis.legend(fontsize=8)
        else:
            axis.text(0.5, 0.5, "not recorded by this run", ha="center", va="center", transform=axis.transAxes)
    figure.suptitle(f"training diagnostics: {Path(run_dir).name}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    columns = [(f"{key}: {name}", values) for key, _, _ in PANELS for name, values in data[key].items()]
    with open(out.with_suffix(".csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["iteration", *(name for name, _ in columns)])
        for row, iteration in enumerate(iterations):
            writer.writerow([int(iteration), *("" if values[row] is None else values[row] for _, values in columns)])
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m fewshot_acdc.results.diagnostics``: the command (its flags and its output) is
    fewshot_acdc.cli.diagnostics, since only cli/ reads argv."""
    from ..cli.diagnostics import main as command
    return command(argv)


if __name__ == "__main__":
    sys.exit(main())
