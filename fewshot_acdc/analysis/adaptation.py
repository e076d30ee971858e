"""Query accuracy and loss after each inner step: the paper's "ACDC adapts faster" claim, measured.

Each run adapts on the same saved episodes (the evaluation episode set, shared by every run of a
dataset), and is scored after 0, 1, ..., N inner steps, N possibly beyond the step count it was
trained or evaluated with: how fast a run's query accuracy rises, and whether it keeps rising or
degrades when adapted longer, is the robustness part of the claim. Step 0 is the meta-learned
initialisation itself, before any adaptation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..meta.functional import score_query
from ..meta.maml import module_mode
from ..nn.norm import inner_step
from ..results.stats import mean_ci95
from .common import (AnalysisError, PathLike, TrainedRun, adaptation_trajectory, open_run, output_directory,
                     save_figure, scoring_step, write_csv, write_json)


@dataclass
class AdaptationCurve:
    """One run's scores: ``accuracy[e, k]`` / ``loss[e, k]`` on episode ``e`` after ``k`` steps."""

    label: str
    run: str
    conv: str
    adapt: str
    trained_inner_steps: int
    inner_steps_eval: int
    episode_set: str
    accuracy: np.ndarray
    loss: np.ndarray
    summary: List[Dict[str, float]] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return self.accuracy.shape[1] - 1

    def to_dict(self) -> Dict[str, object]:
        return {"label": self.label, "run": self.run, "conv": self.conv, "adapt": self.adapt,
                "trained_inner_steps": self.trained_inner_steps, "inner_steps_eval": self.inner_steps_eval,
                "episode_set": self.episode_set, "episodes": int(self.accuracy.shape[0]), "steps": self.steps,
                "per_step": self.summary}


def summarise(accuracy: np.ndarray, loss: np.ndarray) -> List[Dict[str, float]]:
    """Mean and 95% CI per step (the results module's convention: 1.96 * population std / sqrt(n))."""
    rows = []
    for step in range(accuracy.shape[1]):
        acc_mean, acc_ci, n = mean_ci95(accuracy[:, step])
        loss_mean, loss_ci, _ = mean_ci95(loss[:, step])
        rows.append({"step": step, "accuracy": acc_mean, "accuracy_ci95": acc_ci,
                     "loss": loss_mean, "loss_ci95": loss_ci, "episodes": n})
    return rows


def score_trajectory(run: TrainedRun, episode, steps: int) -> tuple:
    """``(accuracies, losses)`` of the query set after 0..``steps`` inner steps on one episode."""
    trajectory = adaptation_trajectory(run, episode, steps)
    accuracies, losses = [], []
    with module_mode(run.model, False), torch.no_grad():
        for taken, params in enumerate(trajectory):
            with inner_step(scoring_step(taken)):
                loss, accuracy = score_query(run.model, params, episode.query_images, episode.query_labels)
            losses.append(loss)
            accuracies.append(accuracy)
    values = torch.stack([torch.stack(accuracies), torch.stack(losses)]).cpu().double().numpy()
    if not np.all(np.isfinite(values)):
        bad = int(np.argmax(~np.isfinite(values[1])))
        raise AnalysisError(f"{run.root}: the query loss is not finite after {bad} inner steps; the step sizes "
                            f"diverge on this episode (try fewer --steps)")
    return values[0], values[1]


def adaptation_curve(run: TrainedRun, steps: int, episodes: int) -> AdaptationCurve:
    """Score ``run`` on the first ``episodes`` episodes of its saved evaluation set."""
    if steps < 0:
        raise AnalysisError(f"--steps must be >= 0, got {steps}")
    episode_set = run.episode_set(episodes)
    accuracy = np.zeros((episodes, steps + 1))
    loss = np.zeros((episodes, steps + 1))
    for index in range(episodes):
        accuracy[index], loss[index] = score_trajectory(run, run.episode(index), steps)
    return AdaptationCurve(run.label, str(run.root), run.config.conv, run.config.adapt,
                           run.config.inner_steps, run.config.inner_steps_eval, episode_set.name,
                           accuracy, loss, summarise(accuracy, loss))


def check_same_episodes(curves: Sequence[AdaptationCurve]) -> None:
    """Curves in one figure must come from the same episodes, or their gap is not the runs' gap."""
    names = {curve.episode_set for curve in curves}
    if len(names) > 1:
        listing = "; ".join(f"{curve.run}: {curve.episode_set}" for curve in curves)
        raise AnalysisError("the runs were not scored on the same episodes (different dataset, ways, shots, "
                            f"queries_eval or image size): {listing}. Plot runs of one protocol together")


def draw_adaptation(curves: Sequence[AdaptationCurve]):
    """Accuracy (left) and loss (right) per inner step with 95% CI bands; a dotted line marks
    each run's trained inner step count."""
    from matplotlib.figure import Figure
    figure = Figure(figsize=(11, 4.2))
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    for index, curve in enumerate(curves):
        color = f"C{index % 10}"
        steps = np.arange(curve.steps + 1)
        for axes, key in ((accuracy_axes, "accuracy"), (loss_axes, "loss")):
            mean = np.array([row[key] for row in curve.summary])
            ci = np.array([row[f"{key}_ci95"] for row in curve.summary])
            axes.plot(steps, mean, marker="o", markersize=3, color=color, label=curve.label)
            axes.fill_between(steps, mean - ci, mean + ci, color=color, alpha=0.18, linewidth=0)
            axes.axvline(curve.trained_inner_steps, color=color, linestyle=":", linewidth=1)
    episodes = curves[0].accuracy.shape[0] if curves else 0
    accuracy_axes.set(xlabel="inner steps", ylabel="query accuracy",
                      title=f"query accuracy, mean and 95% CI over {episodes} episodes")
    loss_axes.set(xlabel="inner steps", ylabel="query loss", title="query loss (dotted: trained inner steps)")
    accuracy_axes.legend(fontsize=7, loc="lower right")
    for axes in (accuracy_axes, loss_axes):
        axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def run_adaptation(runs: Sequence[PathLike], out: PathLike, *, steps: Optional[int] = None, episodes: int = 100,
                   checkpoint: str = "best", split: str = "test", device: str = "cpu",
                   data_root: Optional[str] = None, figure_format: str = "png") -> Dict[str, Path]:
    """Curves of every run in one figure; writes ``adaptation.<png|svg>``, ``adaptation.csv``
    (run, step, mean and CI of accuracy and loss) and ``adaptation.json`` (the same plus the
    per-episode accuracies and losses). ``steps`` defaults to twice the largest
    ``inner_steps_eval``."""
    if not runs:
        raise AnalysisError("adaptation needs at least one --run")
    opened = [open_run(run, checkpoint=checkpoint, split=split, device=device, data_root=data_root) for run in runs]
    if steps is None:
        steps = 2 * max(run.config.inner_steps_eval for run in opened)
    curves = [adaptation_curve(run, steps, episodes) for run in opened]
    check_same_episodes(curves)
    out = output_directory(out)
    paths = {"figure": save_figure(draw_adaptation(curves), out / f"adaptation.{figure_format}")}
    paths["csv"] = write_csv(out / "adaptation.csv",
                             ["run", "conv", "adapt", "step", "accuracy", "accuracy_ci95", "loss", "loss_ci95",
                              "episodes"],
                             ([curve.run, curve.conv, curve.adapt, row["step"], row["accuracy"],
                               row["accuracy_ci95"], row["loss"], row["loss_ci95"], row["episodes"]]
                              for curve in curves for row in curve.summary))
    paths["json"] = write_json(out / "adaptation.json", {
        "analysis": "adaptation", "checkpoint": checkpoint, "split": split, "steps": steps,
        "runs": [dict(curve.to_dict(), per_episode_accuracy=curve.accuracy.tolist(),
                      per_episode_loss=curve.loss.tolist()) for curve in curves]})
    return paths
