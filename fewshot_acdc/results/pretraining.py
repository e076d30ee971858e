"""The supervised-pretraining table: one row per finished pretraining run (``pretrain.py``).

Columns: backbone, network (conv kind and size), recipe (optimiser, learning rate, lr scaling),
held-out accuracy on the training classes at the last epoch (95% CI over the held-out images),
the best few-shot nearest-centroid validation accuracy (95% CI over the validation episodes) and
its epoch, backbone parameters (classifier excluded: its size is the number of classes) and
seconds per epoch. Rendered by ``python -m fewshot_acdc.results --pretraining RUNS --out DIR``.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, List, Optional

from .runs import discover_runs

KIND = "pretraining"  # runs.pretraining.SUMMARY_KIND (kept torch-free here)
_BACKBONE_ORDER = {"conv4": 0, "resnet10": 1, "resnet18": 2, "resnet34": 3}


@dataclass(frozen=True)
class PretrainingRow:
    name: str
    backbone: str
    conv: str
    size: Optional[int]
    optimizer: str
    lr: float
    lr_scaling: str
    epochs: int
    heldout_accuracy: float
    heldout_ci95: float
    best_val_accuracy: float
    best_epoch: int
    val_ci95: Optional[float]
    backbone_parameters: int
    seconds_per_epoch: float

    @property
    def network(self) -> str:
        return self.conv if self.size is None or self.conv == "standard" else f"{self.conv}, m={self.size}"

    @property
    def recipe(self) -> str:
        scaled = ", kernel lr scaling" if self.lr_scaling == "kernel" else ""
        return f"{self.optimizer} {self.lr:g}{scaled}"


def collect_pretraining(paths: Iterable[str | os.PathLike]) -> List[PretrainingRow]:
    """Every finished pretraining run at or below ``paths``, sorted by backbone, network, recipe."""
    rows = []
    for path in paths:
        for run in discover_runs(path):
            try:
                summary = json.loads((Path(run) / "summary.json").read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if summary.get("kind") != KIND or summary.get("status") != "finished":
                continue
            val_ci95 = None
            try:
                for line in (Path(run) / "metrics.jsonl").read_text().splitlines():
                    record = json.loads(line)
                    if record.get("epoch") == summary["best_epoch"]:
                        val_ci95 = record.get("val_ci95")
            except (OSError, json.JSONDecodeError):
                pass
            rows.append(PretrainingRow(
                name=Path(run).name, backbone=summary["backbone"], conv=summary["conv"], size=summary.get("size"),
                optimizer=summary["optimizer"], lr=summary["lr"], lr_scaling=summary.get("lr_scaling", "none"),
                epochs=summary["epochs"], heldout_accuracy=summary["heldout_accuracy"],
                heldout_ci95=summary["heldout_ci95"], best_val_accuracy=summary["best_val_accuracy"],
                best_epoch=summary["best_epoch"], val_ci95=val_ci95,
                backbone_parameters=summary["backbone_parameters"], seconds_per_epoch=summary["seconds_per_epoch"]))
    return sorted(rows, key=lambda r: (_BACKBONE_ORDER.get(r.backbone, 9), r.backbone, r.conv != "standard",
                                       r.size or 0, r.optimizer != "sgd", r.lr_scaling != "none", r.name))


def render_markdown(rows: List[PretrainingRow]) -> str:
    lines = ["| backbone | network | recipe | held-out acc. (train classes) | 5-way 1-shot val (nearest centroid) "
             "| best epoch | backbone params | s/epoch |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        val = f"{100 * r.best_val_accuracy:.1f}%" + (f" ± {100 * r.val_ci95:.1f}" if r.val_ci95 is not None else "")
        lines.append(f"| {r.backbone} | {r.network} | {r.recipe} | {100 * r.heldout_accuracy:.1f}% ± "
                     f"{100 * r.heldout_ci95:.1f} | {val} | {r.best_epoch}/{r.epochs} | {r.backbone_parameters:,} "
                     f"| {r.seconds_per_epoch:.0f} |")
    return "\n".join(lines) + "\n"


def write_pretraining_report(paths: Iterable[str | os.PathLike], out_dir: str | os.PathLike) -> List[Path]:
    """``pretraining.md`` and ``pretraining.json`` in ``out_dir``; returns the paths written."""
    rows = collect_pretraining(paths)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    markdown, data = out / "pretraining.md", out / "pretraining.json"
    markdown.write_text(render_markdown(rows))
    data.write_text(json.dumps([{**asdict(r), "network": r.network, "recipe": r.recipe} for r in rows], indent=1) + "\n")
    return [markdown, data]
