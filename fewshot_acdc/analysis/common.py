"""What every analysis needs from a run directory: the trained model, its MAML engine, the
fixed evaluation episodes, adaptation with every intermediate step, and writing the outputs.

Why one place: every analysis must see a run exactly as ``evaluate.py`` scores it (the same
checkpoint, step sizes, BatchNorm mode and saved episode set), otherwise its pictures would
describe a different model than the numbers in ``eval/``.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

import torch
from torch import nn

from ..meta.episodes import prepare_episodes
from ..meta.functional import Params, adapt_steps
from ..meta.maml import module_mode

PathLike = Union[str, Path]


class AnalysisError(ValueError):
    """An analysis cannot run on what it was given; the message says what to do instead."""


@dataclass
class TrainedRun:
    """A run directory opened for analysis (see :func:`open_run`)."""

    root: Path
    checkpoint: str
    split: str
    config: object  # TrainConfig
    model: nn.Module
    state: Dict[str, object]
    maml: object  # MAML
    dataset: object  # FewShotDataset of ``split``
    device: torch.device

    @property
    def label(self) -> str:
        """How figures name the run: its directory, conv kind and adaptation scope."""
        return f"{self.root.name} ({self.config.conv}, adapt={self.config.adapt})"

    def initial_parameters(self) -> Params:
        """The meta-learned initialisation, detached (tied tensors once, as ``named_parameters``)."""
        return {name: tensor.detach() for name, tensor in self.model.named_parameters()}

    def episode_set(self, episodes: int, shots: Optional[int] = None):
        """The saved, shared episode set evaluation uses (same file for every run: paired)."""
        from ..runs.data import evaluation_episodes
        if episodes < 1:
            raise AnalysisError(f"episodes must be >= 1, got {episodes}")
        return evaluation_episodes(self.config, self.dataset, self.config.ways, shots or self.config.shots,
                                   episodes, split=self.split)

    def episode(self, index: int, shots: Optional[int] = None):
        """Episode ``index`` of the fixed set, validated and on the model's device."""
        if index < 0:
            raise AnalysisError(f"episode index must be >= 0, got {index}")
        episode = self.episode_set(index + 1, shots)[index]
        reference = next(self.model.parameters())
        (episode,) = prepare_episodes([episode], self.maml.n_way, reference.device, reference.dtype,
                                      in_meta_batch=False)
        return episode


def open_run(run_dir: PathLike, *, checkpoint: str = "best", split: str = "test", device: str = "cpu",
             data_root: Optional[str] = None) -> TrainedRun:
    """Load ``checkpoint`` of ``run_dir`` with its MAML engine and the ``split`` it is analysed on.

    Fails before loading anything with a message naming the missing piece: a directory that is
    not a run (no config.yaml), or a run without the checkpoint (still before its first
    validation, or a copy without ``checkpoints/``).
    """
    from ..runs.builders import resolve_device
    from ..runs.data import open_split
    from ..runs.directory import RunDirectory
    from ..runs.evaluation import evaluation_maml, load_trained
    from ..runs.directory import resume_config

    run = RunDirectory(run_dir)
    if not run.root.is_dir():
        raise AnalysisError(f"{run.root} is not a directory; pass --run a run directory (it holds config.yaml)")
    if not run.config.is_file():
        raise AnalysisError(f"{run.root} is not a run directory: it has no config.yaml "
                            "(pass the directory run_maml.py --out wrote)")
    path = run.checkpoint(checkpoint)
    if not path.is_file():
        present = sorted(p.stem for p in run.checkpoints.glob("*.pt")) if run.checkpoints.is_dir() else []
        hint = (f"pass --checkpoint {present[0]}" if present else
                "train it until its first validation (val_every meta-steps) writes checkpoints/, or copy them")
        raise AnalysisError(f"{run.root} has no checkpoint {path.relative_to(run.root)} "
                            f"(checkpoints present: {', '.join(present) or 'none'}); {hint}")
    overrides: Dict[str, object] = {"device": device}
    if data_root is not None:
        overrides["data_root"] = data_root
    torch_device = resolve_device(device)
    dataset = open_split(resume_config(run.root, overrides), split)
    config, model, state = load_trained(run.root, checkpoint, torch_device, dataset.channels, overrides)
    maml = evaluation_maml(config, model, state, config.ways)
    model.eval()  # as evaluation scores: no atom drop (BN still uses batch statistics: transductive)
    return TrainedRun(run.root, checkpoint, split, config, model, state, maml, dataset, torch_device)


def adaptation_trajectory(run: TrainedRun, episode, steps: int) -> List[Params]:
    """Parameters after 0, 1, ..., ``steps`` inner steps on ``episode``'s support set.

    The inner loop of :meth:`MAML.evaluate_episode` (same step sizes, no meta-gradient, eval
    mode), keeping every step so one pass gives the whole curve. ``steps`` may exceed the trained
    count: learned per-step sizes and per-step BatchNorm keep their last step's values.
    """
    if steps < 0:
        raise AnalysisError(f"steps must be >= 0, got {steps}")
    initial = run.initial_parameters()
    if steps == 0:
        return [initial]
    with module_mode(run.model, False):
        result = adapt_steps(run.model, initial, run.maml.adapted_names, episode.support_images,
                             episode.support_labels, inner_lr=run.maml.step_sizes.values(detach=True),
                             steps=steps, create_graph=False, track_meta_gradient=False, keep_trajectory=True)
    return [initial] + [{name: tensor.detach() for name, tensor in params.items()} for params in result.trajectory]


def scoring_step(steps_taken: int) -> int:
    """The inner step whose BatchNorm scores parameters after ``steps_taken`` updates: the step
    the last update belonged to, as :meth:`MAML.evaluate_episode` scores."""
    return max(steps_taken - 1, 0)


def output_directory(out: PathLike) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AnalysisError(f"--out {out} is a file; choose a directory (it is created if missing)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_json(path: PathLike, record: Dict[str, object]) -> Path:
    """The analysis' numbers, with when, by which code and on which machine they were computed
    (as every recorded run and benchmark here)."""
    from ..runs import provenance
    path = Path(path)
    record = {**record, "created": provenance.created_now(), "source": provenance.source_revision(),
              "machine": provenance.machine()}
    path.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def write_csv(path: PathLike, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
    return path


def save_figure(figure, path: PathLike) -> Path:
    """PNG or SVG by the suffix; SVGs without a date or random ids, so reruns diff cleanly."""
    import matplotlib
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".svg"):
        raise AnalysisError(f"figures are written as .png or .svg, got {path.name}")
    with matplotlib.rc_context({"svg.hashsalt": "fewshot-acdc", "svg.fonttype": "path"}):
        if suffix == ".png":
            figure.savefig(path, format="png", dpi=130, bbox_inches="tight")
        else:
            figure.savefig(path, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return path


def finite(value: float) -> Optional[float]:
    """JSON has no NaN: undefined numbers are written as null."""
    return float(value) if math.isfinite(value) else None
