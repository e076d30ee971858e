"""Class activation maps at every depth (the ACDC paper's section 5, after Zhou et al. 2016).

CAM weights the final features by the classifier's weights for a class: ``M_c = sum_k w_ck F_k``.
With ACDC-net every layer's features are produced by the same coefficients, so the paper applies
the *same* weights to the features of every earlier layer (a narrower layer uses the leading
channels, as it uses the leading slice of the shared coefficients). For a standard CNN nothing
ties channel ``k`` of an early layer to channel ``k`` of the last one, so its early maps are
expected to be noise: showing both side by side is the point.

Here ``F_k`` is the output of each spatial convolution (ACDC, DCF, BasisConv, repetition or an
ordinary ``k x k`` conv with ``k > 1``; 1x1 shortcuts are left out) after adapting to the
episode's support set, since a few-shot head only means something for the episode it was adapted
to. A head on flattened ``C x h x w`` features (Conv4) has per-position weights; ``w_ck`` is their
sum over positions, which is exactly the weight of a global-average-pooling head that computes
the same logits on spatially constant features.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..meta.functional import Params
from ..nn import ACDCConv2d, BasisConv2d, DCFConv2d, RepeatedConv2d
from ..nn.norm import inner_step
from .coefficients import capture_inputs_and_outputs
from .common import (AnalysisError, PathLike, adaptation_trajectory, open_run, output_directory, save_figure,
                     scoring_step, write_json)

_SPATIAL = (ACDCConv2d, BasisConv2d, DCFConv2d, RepeatedConv2d)


def spatial_convolutions(model: nn.Module) -> List[str]:
    """Names of the convolutions with a spatial kernel, in forward (registration) order."""
    return [name for name, module in model.named_modules()
            if isinstance(module, _SPATIAL) or (type(module) is nn.Conv2d and module.kernel_size != (1, 1))]


def class_channel_weights(head_weight: torch.Tensor, channels: int) -> torch.Tensor:
    """``(classes, channels)`` CAM weights from a linear head over ``channels`` (GAP) or
    ``channels * positions`` (flattened) features."""
    classes, features = head_weight.shape
    if features % channels:
        raise AnalysisError(f"the head takes {features} features, not a multiple of the last layer's "
                            f"{channels} channels: CAM needs a linear head on that layer's (pooled or "
                            "flattened) features")
    return head_weight.reshape(classes, channels, features // channels).sum(-1)


@dataclass
class LayerCAM:
    """``maps[i]``: the class activation map of image ``i`` at this layer (its own resolution)."""

    layer: str
    channels: int
    maps: torch.Tensor


def class_activation_maps(model: nn.Module, params: Params, images: torch.Tensor, classes: torch.Tensor,
                          layers: Optional[Sequence[str]] = None) -> List[LayerCAM]:
    """CAMs of ``images`` for ``classes`` (one class per image) at ``layers`` (default: every spatial
    convolution), the head's last-layer weights applied to each layer's leading channels."""
    available = spatial_convolutions(model)
    layers = list(available if layers is None else layers)
    unknown = [name for name in layers if name not in available]
    if unknown:
        raise AnalysisError(f"{unknown[0]!r} is not a spatial convolution of this model; choose among: "
                            f"{', '.join(available)}")
    if classes.shape != (images.shape[0],):
        raise AnalysisError(f"one class per image: {images.shape[0]} images, classes of shape {tuple(classes.shape)}")
    modules = dict(model.named_modules())
    captured = capture_inputs_and_outputs(model, params, images, {name: modules[name] for name in available})
    final_channels = captured[available[-1]][1].shape[1]
    weights = class_channel_weights(params["head.weight"].detach(), final_channels)[classes]  # (B, C)
    result = []
    for name in layers:
        features = captured[name][1]
        channels = features.shape[1]
        if channels > final_channels:
            raise AnalysisError(f"layer {name!r} has {channels} channels, more than the last layer's "
                                f"{final_channels}: the last layer's class weights cannot cover it")
        maps = torch.einsum("bc,bchw->bhw", weights[:, :channels].to(features.dtype), features)
        result.append(LayerCAM(name, channels, maps))
    return result


def normalised(maps: torch.Tensor, size: int) -> np.ndarray:
    """Maps upsampled (bilinear) to ``size`` px and scaled to [0, 1] per image, for overlays."""
    upsampled = F.interpolate(maps.unsqueeze(1).double(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    low = upsampled.amin(dim=(1, 2), keepdim=True)
    high = upsampled.amax(dim=(1, 2), keepdim=True)
    return ((upsampled - low) / (high - low).clamp_min(1e-12)).cpu().numpy()


@dataclass
class RunCAM:
    label: str
    run: str
    conv: str
    predictions: List[int]
    layers: List[LayerCAM]


def episode_cams(run, episode, count: int, steps: Optional[int] = None,
                 layers: Optional[Sequence[str]] = None) -> RunCAM:
    """Adapt ``run`` to ``episode`` and compute the CAMs of its first ``count`` query images (one
    per class first: queries are class-major) for their true labels."""
    steps = run.config.inner_steps_eval if steps is None else steps
    adapted = adaptation_trajectory(run, episode, steps)[-1]
    chosen = query_selection(episode.query_labels, count)
    images, labels = episode.query_images[chosen], episode.query_labels[chosen]
    with inner_step(scoring_step(steps)):
        cams = class_activation_maps(run.model, adapted, images, labels, layers)
        with torch.no_grad():
            from torch.func import functional_call
            logits = functional_call(run.model, adapted, (episode.query_images,))
    predictions = logits.argmax(1)[chosen].tolist()
    return RunCAM(run.label, str(run.root), run.config.conv, predictions, cams)


def query_selection(labels: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of ``count`` query images, cycling over the classes so each class shows up."""
    if count < 1:
        raise AnalysisError(f"--images must be >= 1, got {count}")
    by_class = [torch.nonzero(labels == c).flatten().tolist() for c in range(int(labels.max()) + 1)]
    order = [group[i] for i in range(max(map(len, by_class))) for group in by_class if i < len(group)]
    return torch.tensor(order[:count], dtype=torch.long)


def draw_cams(images: torch.Tensor, labels: List[int], results: Sequence[RunCAM]):
    """One row per query image; per run its layers' maps over the image, shallow to deep."""
    from matplotlib.figure import Figure
    size = images.shape[-1]
    columns = 1 + sum(len(result.layers) for result in results)
    figure = Figure(figsize=(1.2 * columns, 1.3 * len(labels) + 0.8))
    axes = figure.subplots(len(labels), columns, squeeze=False)
    shown = images.detach().double().cpu()
    shown = (shown - shown.amin(dim=(1, 2, 3), keepdim=True)) / (
        shown.amax(dim=(1, 2, 3), keepdim=True) - shown.amin(dim=(1, 2, 3), keepdim=True)).clamp_min(1e-12)
    grey = shown.mean(1).numpy()
    for row in range(len(labels)):
        picture = shown[row].permute(1, 2, 0).numpy()
        axes[row, 0].imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray")
        axes[row, 0].set_ylabel(f"class {labels[row]}", fontsize=7)
        column = 1
        for result in results:
            for index, layer in enumerate(result.layers):
                ax = axes[row, column]
                ax.imshow(grey[row], cmap="gray")
                ax.imshow(normalised(layer.maps[row:row + 1], size)[0], cmap="jet", alpha=0.5, vmin=0, vmax=1)
                if row == 0:
                    ax.set_title(f"{layer.layer}", fontsize=6)
                if index == 0:
                    ax.set_ylabel(f"{result.conv}\npred {result.predictions[row]}", fontsize=6)
                column += 1
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle("multi-layer CAM (class weights of the adapted head on every layer): "
                    + " | ".join(result.label for result in results), fontsize=8)
    return figure


def run_cam(runs: Sequence[PathLike], out: PathLike, *, episode: int = 0, images: int = 4,
            steps: Optional[int] = None, layers: Optional[Sequence[str]] = None, checkpoint: str = "best",
            split: str = "test", device: str = "cpu", data_root: Optional[str] = None,
            figure_format: str = "png") -> Dict[str, Path]:
    """CAMs of the same query images for every run (e.g. standard and ACDC-net, same protocol);
    writes ``cam.<png|svg>`` and ``cam.json`` (the raw maps at each layer's resolution)."""
    if not runs:
        raise AnalysisError("cam needs at least one --run")
    opened = [open_run(run, checkpoint=checkpoint, split=split, device=device, data_root=data_root) for run in runs]
    sets = {run.episode_set(episode + 1).name for run in opened}
    if len(sets) > 1:
        raise AnalysisError("the runs do not share an episode set (different dataset, ways, shots, queries_eval or "
                            f"image size: {', '.join(sorted(sets))}); compare runs of one protocol")
    results = []
    for run in opened:
        results.append(episode_cams(run, run.episode(episode), images, steps, layers))
    first = opened[0].episode(episode)
    chosen = query_selection(first.query_labels, images)
    out = output_directory(out)
    paths = {"figure": save_figure(draw_cams(first.query_images[chosen], first.query_labels[chosen].tolist(),
                                             results), out / f"cam.{figure_format}")}
    paths["json"] = write_json(out / "cam.json", {
        "analysis": "cam", "checkpoint": checkpoint, "split": split, "episode": episode,
        "episode_set": sets.pop(), "query_indices": chosen.tolist(), "labels": first.query_labels[chosen].tolist(),
        "runs": [{"run": result.run, "conv": result.conv, "predictions": result.predictions,
                  "layers": [{"layer": layer.layer, "channels": layer.channels, "maps": layer.maps.tolist()}
                             for layer in result.layers]} for result in results]})
    return paths
