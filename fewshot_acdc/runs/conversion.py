"""Convert a trained standard-conv run to BasisConv: the logic behind ``python -m fewshot_acdc.cli.convert``.

The run's checkpoint is loaded into its backbone, every factory-built convolution is replaced by
its truncated eigen-decomposition (:func:`fewshot_acdc.nn.convert_to_basisconv`), and the result
is written as ``<run>/basisconv/<checkpoint>-rank<r>.pt`` (or ``-energy<e>``) with a JSON report
of the per-layer and total relative reconstruction error next to it. Optionally the original and
the converted model are both scored, without any fine-tuning, on the run's fixed test episodes.

A converted checkpoint holds the per-layer ranks, so :func:`load_converted` rebuilds the same
architecture (standard backbone from the saved config, converted with those ranks) before loading
its weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
from torch import nn

from ..config import TrainConfig, canonical_values, load_config
from ..nn.conversion import BasisConversionReport, convert_to_basisconv
from .builders import build_maml, build_model
from .checkpoint import load_checkpoint, save_checkpoint
from .directory import RunDirectory, resume_config
from .record import mean_ci95


def checkpoint_in_channels(model_state: Dict[str, torch.Tensor]) -> int:
    """Input channels of a backbone state dict: those of its first convolution weight (the stem)."""
    for tensor in model_state.values():
        if tensor.dim() == 4:
            return int(tensor.shape[1])
    raise ValueError("the checkpoint holds no convolution weight")


def _suffix(rank: Optional[int], energy: Optional[float]) -> str:
    return f"rank{rank}" if rank is not None else f"energy{energy:g}"


def convert_run(
    run_dir: Union[str, Path],
    *,
    checkpoint: str = "best",
    rank: Optional[int] = None,
    energy: Optional[float] = None,
    out: Optional[Union[str, Path]] = None,
    evaluate_episodes: Optional[int] = None,
    data_root: Optional[str] = None,
    device: str = "cpu",
) -> Dict[str, object]:
    """Convert ``checkpoint`` of the standard-conv run ``run_dir``; returns the report (a dict).

    ``evaluate_episodes``: also score the original and the converted model (no fine-tuning) on
    that many of the run's fixed test episodes (needs the run's dataset).
    """
    run = RunDirectory(run_dir)
    if not run.config.is_file():
        raise FileNotFoundError(f"{run.root}: no config.yaml there, so it is not a run directory")
    overrides = {"device": device, **({"data_root": data_root} if data_root is not None else {})}
    config = resume_config(run.root, overrides)
    if config.conv != "standard":
        raise ValueError(f"{run.root} trained conv kind {config.conv!r}; only standard-conv runs can be "
                         f"converted to BasisConv")
    state = load_checkpoint(run.checkpoint(checkpoint), map_location="cpu")
    model = build_model(config, checkpoint_in_channels(state["model"]))
    model.load_state_dict(state["model"])
    converted, report = convert_to_basisconv(model, rank, energy=energy)
    path = Path(out) if out is not None else run.root / "basisconv" / f"{checkpoint}-{_suffix(rank, energy)}.pt"
    result: Dict[str, object] = {
        "run": str(run.root), "checkpoint": checkpoint, "checkpoint_iteration": state.get("iteration"),
        "output": str(path), **report.to_dict(),
    }
    if evaluate_episodes:
        from .data import evaluation_episodes, open_split
        torch_device = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
        dataset = open_split(config, "test")
        episodes = evaluation_episodes(config, dataset, config.ways, config.shots, evaluate_episodes, split="test")
        scores = {}
        for label, candidate in (("original", model), ("converted", converted)):
            maml = build_maml(config, candidate.to(torch_device))
            accuracies = [maml.evaluate_episode(episode.to(torch_device))[1] for episode in episodes]
            mean, ci95, _ = mean_ci95(accuracies)
            scores[label] = {"mean_accuracy": mean, "ci95": ci95, "episodes": len(accuracies)}
        result["evaluation"] = {"episode_set": episodes.name, "ways": config.ways, "shots": config.shots,
                                "note": "no fine-tuning after conversion", **scores}
        converted = converted.cpu()
    save_checkpoint(path, {
        "model": converted.state_dict(), "ranks": report.ranks, "config": config.to_dict(),
        "iteration": state.get("iteration"), "source_checkpoint": checkpoint, "report": result,
    })
    run.write_json(path.with_suffix(".json"), result)
    return result


def load_converted(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu"
                   ) -> Tuple[TrainConfig, nn.Module, Dict[str, object]]:
    """``(config, BasisConv model, checkpoint)`` from a file written by :func:`convert_run`."""
    state = load_checkpoint(path, map_location=map_location)
    if "ranks" not in state:
        raise ValueError(f"{path} is not a converted BasisConv checkpoint (no per-layer ranks)")
    config = load_config(None, canonical_values(state["config"]))
    model = build_model(config, checkpoint_in_channels(state["model"]))
    model, _ = convert_to_basisconv(model, dict(state["ranks"]))
    model.load_state_dict(state["model"])
    return config, model.to(map_location), state


def format_result(result: Dict[str, object]) -> str:
    """The report as text: per-layer table, total, and the optional evaluation."""
    report = BasisConversionReport(rank=result.get("rank"), energy=result.get("energy"),
                                   total_relative_error=float(result["total_relative_error"]))
    from ..nn.conversion import LayerConversion
    for layer in result["layers"]:
        report.layers.append(LayerConversion(**{**layer, "kernel_size": tuple(layer["kernel_size"])}))
    lines = [report.format()]
    evaluation = result.get("evaluation")
    if evaluation:
        for label in ("original", "converted"):
            score = evaluation[label]
            lines.append(f"{label:>9}: {100 * score['mean_accuracy']:.2f}% +- {100 * score['ci95']:.2f}% "
                         f"({evaluation['ways']}-way {evaluation['shots']}-shot, {score['episodes']} test episodes, "
                         f"no fine-tuning)")
    lines.append(f"wrote {result['output']}")
    return "\n".join(lines)
