"""TensorBoard logging of a run's metrics (``tensorboard: true``; optional, off by default).

``metrics.jsonl`` stays the record; this mirrors its numeric fields, as scalars at each line's
``iteration`` (meta-step, or epoch for pretraining), into ``<run>/tensorboard/`` for
``tensorboard --logdir runs/``. Nested fields (per-role gradient norms) become ``a/b`` tags.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Tuple

INSTALL_HINT = "pip install tensorboard (or the package's extra: pip install -e '.[tensorboard]')"


def _scalars(record: Dict[str, Any], prefix: str = "") -> Iterator[Tuple[str, float]]:
    for key, value in record.items():
        tag = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value) and key != "iteration":
            yield tag, float(value)
        elif isinstance(value, dict):
            yield from _scalars(value, f"{tag}/")
        elif isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
            for index, item in enumerate(value):
                yield f"{tag}/{index}", float(item)


class TensorBoardLog:
    """Writes records to ``run_dir/tensorboard``; raises RuntimeError with the install line when
    the ``tensorboard`` package is missing (checked when the run starts, not at the first line)."""

    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise RuntimeError(f"tensorboard: true needs the tensorboard package, which is not installed: "
                               f"{INSTALL_HINT}; or set tensorboard: false") from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def write(self, records: Iterable[Dict[str, Any]]) -> None:
        for record in records:
            step = int(record.get("iteration", 0))
            for tag, value in _scalars(record):
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
