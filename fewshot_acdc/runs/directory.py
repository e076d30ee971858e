"""The run directory (layout in docs/run_directory.md): paths and the files written into it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Union

from ..utils import atomic_write_text


class RunDirectory:
    def __init__(self, root: Union[str, Path]) -> None:
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, name: str) -> Path:
        return self.checkpoints / f"{name}.pt"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    def eval_file(self, split: str, ways: int, shots: int) -> Path:
        return self.eval_dir / f"{split}_{ways}way_{shots}shot.json"

    def create(self) -> "RunDirectory":
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        return self

    def append_metrics(self, record: Dict[str, Any]) -> None:
        with open(self.metrics, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def read_metrics(self) -> List[Dict[str, Any]]:
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def truncate_metrics_after(self, iteration: int) -> None:
        """On resume, drop lines logged after the checkpoint we continue from (they will be
        logged again), so metrics.jsonl holds each interval once."""
        kept = [record for record in self.read_metrics() if record.get("iteration", 0) <= iteration]
        atomic_write_text(self.metrics, "".join(json.dumps(record) + "\n" for record in kept))

    def write_json(self, path: Path, payload: Dict[str, Any]) -> None:
        atomic_write_text(path, json.dumps(payload, indent=2) + "\n")

    def iter_eval_files(self) -> Iterator[Path]:
        return iter(sorted(self.eval_dir.glob("*.json"))) if self.eval_dir.exists() else iter(())
