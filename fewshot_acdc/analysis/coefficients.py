"""The paper's motivating experiment (ACDC, section 2.2): are a CNN's kernel coefficients redundant
across layers?

A ``k x k`` convolution ``W`` (``C_out x C_in x k x k``) is decomposed into ``m`` spatial atoms
and coefficients: the kernel reshaped to ``(C_out * C_in, k * k)`` has the SVD ``U S V^T``; the
atoms are the top ``m`` right singular vectors (``m x k x k``) and the coefficients ``A`` the
kernel's projections onto them (``C_out x C_in x m``), so ``W = A D`` exactly when ``m = k * k``
and is its best rank-``m`` approximation otherwise. The layer then runs as an *atom sub-layer*
(every input channel convolved with each atom: ``C_in * m`` maps) followed by a *coefficient
sub-layer* (a 1x1 convolution with ``A``).

Reported per layer: the singular value spectrum of the coefficients (``A`` as a ``C_out x C_in*m``
matrix) and its effective rank; and between every pair of layers, the SVCCA similarity of their
coefficient sub-layer outputs (Raghu et al. 2017: each output channel is a neuron, each image and
position a data point). High similarity across layers is what motivates sharing coefficients.
For an ACDC run the coefficients already are shared: its spectra are those of each shared
coefficient tensor, and the SVCCA similarities are between its layers' outputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..meta.functional import Params
from ..meta.maml import module_mode
from ..nn import ACDCConv2d
from .common import AnalysisError, PathLike, open_run, output_directory, save_figure, write_csv, write_json

# Raghu et al. keep the top singular directions explaining 99% of the variance before CCA.
SVCCA_VARIANCE_KEPT = 0.99


# ----------------------------------------------------------------------------- decomposition
@dataclass
class KernelDecomposition:
    """``atoms`` ``(m, kh, kw)``, ``coefficients`` ``(C_out, C_in, m)``; ``kernel_singular_values``
    of the ``(C_out*C_in, kh*kw)`` kernel matrix (all ``kh*kw``, descending)."""

    atoms: torch.Tensor
    coefficients: torch.Tensor
    kernel_singular_values: torch.Tensor

    def kernel(self) -> torch.Tensor:
        """``W = A D``: the kernel the decomposition represents."""
        out_channels, in_channels, count = self.coefficients.shape
        kh, kw = self.atoms.shape[-2:]
        return (self.coefficients.reshape(-1, count) @ self.atoms.reshape(count, kh * kw)).reshape(
            out_channels, in_channels, kh, kw)


def decompose_kernel(weight: torch.Tensor, atoms: Optional[int] = None) -> KernelDecomposition:
    """Decompose a conv kernel ``(C_out, C_in, kh, kw)`` into ``atoms`` (default ``kh * kw``:
    exact) spatial atoms and their coefficients, by the SVD of the kernel's spatial taps."""
    if weight.dim() != 4:
        raise AnalysisError(f"a conv kernel is (C_out, C_in, kh, kw); got shape {tuple(weight.shape)}")
    out_channels, in_channels, kh, kw = weight.shape
    taps = kh * kw
    atoms = taps if atoms is None else atoms
    if not isinstance(atoms, int) or isinstance(atoms, bool) or not 1 <= atoms <= taps:
        raise AnalysisError(f"a {kh}x{kw} kernel decomposes into 1..{taps} atoms, got atoms={atoms!r}")
    matrix = weight.detach().double().reshape(out_channels * in_channels, taps)
    _, singular_values, right = torch.linalg.svd(matrix, full_matrices=False)
    basis = right[:atoms]  # (m, taps), orthonormal rows
    coefficients = (matrix @ basis.T).reshape(out_channels, in_channels, atoms)
    return KernelDecomposition(basis.reshape(atoms, kh, kw), coefficients, singular_values)


def atom_sublayer(features: torch.Tensor, atoms: torch.Tensor, stride, padding, dilation) -> torch.Tensor:
    """Every input channel convolved with each atom: ``(B, C_in * m, H', W')``, channel ``c * m + j``
    the response of input channel ``c`` to atom ``j`` (a depthwise convolution)."""
    count, kh, kw = atoms.shape
    channels = features.shape[1]
    depthwise = atoms.reshape(1, count, kh, kw).expand(channels, -1, -1, -1).reshape(channels * count, 1, kh, kw)
    return F.conv2d(features, depthwise.to(features.dtype), None, stride, padding, dilation, groups=channels)


def coefficient_sublayer(responses: torch.Tensor, coefficients: torch.Tensor, bias=None) -> torch.Tensor:
    """The 1x1 convolution that mixes the atom responses with the coefficients ``(C_out, C_in, m)``."""
    out_channels, in_channels, count = coefficients.shape
    weight = coefficients.reshape(out_channels, in_channels * count, 1, 1).to(responses.dtype)
    return F.conv2d(responses, weight, bias)


# ----------------------------------------------------------------------------- spectra
def singular_value_spectrum(coefficients: torch.Tensor) -> np.ndarray:
    """Singular values (descending) of coefficients ``(O, s, m)`` as an ``O x s*m`` matrix: how
    many independent output-channel mixtures the layer (or shared tensor) really holds."""
    if coefficients.dim() != 3:
        raise AnalysisError(f"coefficients are (out, in, atoms); got shape {tuple(coefficients.shape)}")
    matrix = coefficients.detach().double().reshape(coefficients.shape[0], -1).cpu()
    return torch.linalg.svdvals(matrix).numpy()


def effective_rank(singular_values: np.ndarray) -> float:
    """Roy & Vetterli's effective rank ``exp(H(p))``, ``p = s / sum(s)``: the number of equally
    strong directions with the same entropy (1 for rank one, ``n`` for a flat spectrum)."""
    values = np.asarray(singular_values, dtype=float)
    total = values.sum()
    if total <= 0:
        return 0.0
    p = values[values > 0] / total
    return float(math.exp(-(p * np.log(p)).sum()))


# ----------------------------------------------------------------------------- CCA / SVCCA
def _orthonormal_basis(centered: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the column space (rank-revealing: null directions dropped)."""
    left, values, _ = np.linalg.svd(centered, full_matrices=False)
    tolerance = values.max(initial=0.0) * max(centered.shape) * np.finfo(float).eps
    return left[:, values > tolerance]


def canonical_correlations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Canonical correlations (descending) between ``x`` ``(n, p)`` and ``y`` ``(n, q)``, rows = data
    points: the cosines of the principal angles between their centred column spaces.

    Refuses ``n`` not above the dimensions: with as many points as neurons any two sets are
    perfectly correlated, which would read as a finding.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise AnalysisError(f"CCA needs two (points, neurons) matrices with the same points; got {x.shape}, {y.shape}")
    qx, qy = _orthonormal_basis(x - x.mean(0)), _orthonormal_basis(y - y.mean(0))
    if x.shape[0] <= qx.shape[1] + qy.shape[1]:
        raise AnalysisError(f"CCA of {qx.shape[1]} and {qy.shape[1]} directions needs more than "
                            f"{qx.shape[1] + qy.shape[1]} data points, got {x.shape[0]}; use more images "
                            "(--episodes)")
    if qx.shape[1] == 0 or qy.shape[1] == 0:
        return np.zeros(0)
    return np.clip(np.linalg.svd(qx.T @ qy, compute_uv=False), 0.0, 1.0)


def svcca_reduce(x: np.ndarray, keep: float = SVCCA_VARIANCE_KEPT) -> np.ndarray:
    """SVCCA's first step: the centred data projected on its top singular directions that explain
    ``keep`` of the variance (Raghu et al. 2017), dropping noise directions before CCA."""
    centered = np.asarray(x, dtype=float) - np.asarray(x, dtype=float).mean(0)
    left, values, _ = np.linalg.svd(centered, full_matrices=False)
    energy = np.cumsum(values ** 2)
    if energy[-1] <= 0:
        return centered[:, :0]
    count = int(np.searchsorted(energy / energy[-1], keep) + 1)
    return left[:, :count] * values[:count]


def svcca(x: np.ndarray, y: np.ndarray, keep: float = SVCCA_VARIANCE_KEPT) -> np.ndarray:
    """SVCCA correlations between ``x`` and ``y`` (rows = data points); their mean is the similarity."""
    return canonical_correlations(svcca_reduce(x, keep), svcca_reduce(y, keep))


def as_neurons(maps: torch.Tensor, size: Tuple[int, int]) -> np.ndarray:
    """``(B, C, H, W)`` feature maps as ``(B * h * w, C)`` data points after average-pooling to
    ``size``: layers of different resolutions then share their data points (image, region)."""
    pooled = F.adaptive_avg_pool2d(maps.double(), size)
    return pooled.permute(0, 2, 3, 1).reshape(-1, maps.shape[1]).cpu().numpy()


def similarity_matrix(outputs: Dict[str, torch.Tensor], keep: float = SVCCA_VARIANCE_KEPT) -> np.ndarray:
    """Mean SVCCA correlation between every pair of layers' outputs (1 on the diagonal); each pair
    is compared at the smaller of the two resolutions."""
    names = list(outputs)
    matrix = np.eye(len(names))
    for i, first in enumerate(names):
        for j in range(i + 1, len(names)):
            second = names[j]
            size = tuple(min(a, b) for a, b in zip(outputs[first].shape[-2:], outputs[second].shape[-2:]))
            correlations = svcca(as_neurons(outputs[first], size), as_neurons(outputs[second], size), keep)
            matrix[i, j] = matrix[j, i] = float(correlations.mean()) if correlations.size else 0.0
    return matrix


# ----------------------------------------------------------------------------- layers of a model
def three_by_three_convolutions(model: nn.Module, names: Optional[Sequence[str]] = None) -> List[Tuple[str, nn.Conv2d]]:
    """The ordinary ``3x3`` convolutions to decompose (all of them, or ``names``), in order.

    Refuses a named layer that is not an ordinary 3x3 convolution, listing those that are: the
    decomposition is of spatial kernels, and the paper's experiment is on 3x3 layers (a 1x1
    shortcut has no spatial structure; a 7x7 stem is not comparable with 3x3 layers).
    """
    convolutions = {name: module for name, module in model.named_modules() if type(module) is nn.Conv2d}
    eligible = [name for name, conv in convolutions.items() if conv.kernel_size == (3, 3) and conv.groups == 1]
    if names is None:
        if not eligible:
            raise AnalysisError(f"this {type(model).__name__} has no ordinary 3x3 convolution to decompose "
                                "(an ACDC run's coefficients are analysed as they are: run it on that run)")
        return [(name, convolutions[name]) for name in eligible]
    chosen = []
    for name in names:
        if name not in convolutions:
            raise AnalysisError(f"{name!r} is not an ordinary convolution of this model; its 3x3 convolutions "
                                f"are: {', '.join(eligible) or 'none'}")
        conv = convolutions[name]
        if conv.kernel_size != (3, 3) or conv.groups != 1:
            shape = "x".join(map(str, conv.kernel_size))
            raise AnalysisError(f"layer {name!r} has a {shape} kernel (groups={conv.groups}); the coefficients "
                                "decomposition is of ungrouped 3x3 convolutions. Choose among: "
                                f"{', '.join(eligible) or 'none'}")
        chosen.append((name, conv))
    return chosen


def capture_inputs_and_outputs(model: nn.Module, params: Params, images: torch.Tensor,
                               modules: Dict[str, nn.Module]) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """Each named module's ``(input, output)`` in one forward of ``model`` with ``params``."""
    captured: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
    handles = [module.register_forward_hook(
        lambda module, inputs, output, name=name: captured.__setitem__(name, (inputs[0].detach(), output.detach())))
        for name, module in modules.items()]
    try:
        with module_mode(model, False), torch.no_grad():
            functional_call(model, params, (images,))
    finally:
        for handle in handles:
            handle.remove()
    return captured


@dataclass
class CoefficientReport:
    conv: str
    atoms: Optional[int]
    layers: List[str]
    spectra: Dict[str, np.ndarray]  # layer (standard) or shared tensor name (ACDC) -> singular values
    spectrum_users: Dict[str, List[str]]  # which layers use each spectrum's coefficients
    relative_error: Dict[str, float] = field(default_factory=dict)  # decomposition error per layer
    similarity: Optional[np.ndarray] = None
    images: int = 0

    def to_dict(self) -> Dict[str, object]:
        return {"conv": self.conv, "atoms": self.atoms, "layers": self.layers, "images": self.images,
                "spectra": {name: {"singular_values": values.tolist(), "effective_rank": effective_rank(values),
                                   "used_by": self.spectrum_users[name]} for name, values in self.spectra.items()},
                "relative_reconstruction_error": self.relative_error,
                "svcca_similarity": None if self.similarity is None else self.similarity.tolist(),
                "svcca_variance_kept": SVCCA_VARIANCE_KEPT}


def standard_coefficients(model: nn.Module, params: Params, images: torch.Tensor, atoms: Optional[int] = None,
                          layers: Optional[Sequence[str]] = None) -> CoefficientReport:
    """Decompose the 3x3 convolutions of a standard-conv model (weights from ``params``) and compare
    their coefficient sub-layer outputs on ``images`` (inputs captured from the real network)."""
    chosen = three_by_three_convolutions(model, layers)
    names = {id(p): name for name, p in model.named_parameters()}
    captured = capture_inputs_and_outputs(model, params, images, dict(chosen))
    spectra, users, errors, outputs = {}, {}, {}, {}
    for name, conv in chosen:
        weight = params[names[id(conv.weight)]].detach()
        decomposition = decompose_kernel(weight, atoms)
        spectra[name], users[name] = singular_value_spectrum(decomposition.coefficients), [name]
        errors[name] = float((decomposition.kernel() - weight.double()).norm() / weight.double().norm().clamp_min(1e-300))
        features = captured[name][0].double()
        bias = None if conv.bias is None else params[names[id(conv.bias)]].detach().double()
        responses = atom_sublayer(features, decomposition.atoms, conv.stride, conv.padding, conv.dilation)
        outputs[name] = coefficient_sublayer(responses, decomposition.coefficients, bias)
    report = CoefficientReport("standard", atoms or 9, [name for name, _ in chosen], spectra, users, errors)
    report.similarity = similarity_matrix(outputs) if len(outputs) > 1 else None
    report.images = int(images.shape[0])
    return report


def acdc_coefficients(model: nn.Module, params: Params, images: torch.Tensor) -> CoefficientReport:
    """Spectra of an ACDC model's coefficient tensors (each shared tensor once, with the layers that
    use it) and the SVCCA similarity of its layers' outputs (the coefficient sub-layers' outputs)."""
    layers = [(name, module) for name, module in model.named_modules() if isinstance(module, ACDCConv2d)]
    if not layers:
        raise AnalysisError(f"this {type(model).__name__} has no ACDC layer")
    names = {id(p): name for name, p in model.named_parameters()}
    spectra, users = {}, {}
    for layer_name, module in layers:
        key = names[id(module.coefficients)]
        users.setdefault(key, []).append(layer_name)
        if key not in spectra:
            spectra[key] = singular_value_spectrum(params[key])
    captured = capture_inputs_and_outputs(model, params, images, dict(layers))
    outputs = {name: captured[name][1] for name, _ in layers}
    report = CoefficientReport(model.conv_spec.kind if hasattr(model, "conv_spec") else "acdc",
                               layers[0][1].num_atoms, [name for name, _ in layers], spectra, users)
    report.similarity = similarity_matrix(outputs) if len(outputs) > 1 else None
    report.images = int(images.shape[0])
    return report


def draw_coefficients(report: CoefficientReport, title: str):
    from matplotlib.figure import Figure
    panels = 2 if report.similarity is not None else 1
    figure = Figure(figsize=(5.2 * panels, 4.2))
    axes = figure.subplots(1, panels, squeeze=False)[0]
    for index, (name, values) in enumerate(report.spectra.items()):
        normalised = values / values[0] if values.size and values[0] > 0 else values
        axes[0].semilogy(np.arange(1, values.size + 1), normalised, color=f"C{index % 10}",
                         label=f"{name} (eff. rank {effective_rank(values):.1f})")
    axes[0].set(xlabel="singular value index", ylabel="singular value / largest",
                title="coefficient spectra" + (f" (m = {report.atoms} atoms)" if report.atoms else ""))
    axes[0].legend(fontsize=6)
    axes[0].grid(alpha=0.3)
    if report.similarity is not None:
        image = axes[1].imshow(report.similarity, vmin=0, vmax=1, cmap="viridis")
        axes[1].set_xticks(range(len(report.layers)), report.layers, rotation=60, ha="right", fontsize=6)
        axes[1].set_yticks(range(len(report.layers)), report.layers, fontsize=6)
        for i in range(len(report.layers)):
            for j in range(len(report.layers)):
                axes[1].text(j, i, f"{report.similarity[i, j]:.2f}", ha="center", va="center", fontsize=6,
                             color="white" if report.similarity[i, j] < 0.6 else "black")
        axes[1].set_title("mean SVCCA of coefficient sub-layer outputs", fontsize=9)
        figure.colorbar(image, ax=axes[1], fraction=0.046)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def analysis_images(run, episodes: int) -> torch.Tensor:
    """Support and query images of the first ``episodes`` saved episodes: the data points."""
    images = [torch.cat([episode.support_images, episode.query_images])
              for episode in (run.episode(index) for index in range(episodes))]
    return torch.cat(images)


def run_coefficients(run_dir: PathLike, out: PathLike, *, atoms: Optional[int] = None,
                     layers: Optional[Sequence[str]] = None, episodes: int = 20, checkpoint: str = "best",
                     split: str = "test", device: str = "cpu", data_root: Optional[str] = None,
                     figure_format: str = "png") -> Dict[str, Path]:
    """The coefficient analysis of one run (standard: decomposed 3x3 layers; ACDC: its coefficient
    tensors); writes ``coefficients.<png|svg>``, ``coefficients.csv`` (one row per singular value)
    and ``coefficients.json`` (spectra, effective ranks, SVCCA matrix, reconstruction errors)."""
    run = open_run(run_dir, checkpoint=checkpoint, split=split, device=device, data_root=data_root)
    images = analysis_images(run, episodes)
    params = run.initial_parameters()
    if any(isinstance(module, ACDCConv2d) for module in run.model.modules()):
        if atoms is not None or layers is not None:
            raise AnalysisError(f"{run.root} is an ACDC run ({run.config.conv}): its atoms and coefficients are "
                                "learned, not decomposed; drop --atoms/--layers")
        report = acdc_coefficients(run.model, params, images)
    else:
        report = standard_coefficients(run.model, params, images, atoms, layers)
    out = output_directory(out)
    paths = {"figure": save_figure(draw_coefficients(report, run.label), out / f"coefficients.{figure_format}")}
    paths["csv"] = write_csv(out / "coefficients.csv", ["coefficients", "index", "singular_value", "used_by"],
                             ([name, index, float(value), " ".join(report.spectrum_users[name])]
                              for name, values in report.spectra.items() for index, value in enumerate(values)))
    paths["json"] = write_json(out / "coefficients.json", {
        "analysis": "coefficients", "run": str(run.root), "checkpoint": checkpoint, "split": split,
        "episodes": episodes, "episode_set": run.episode_set(episodes).name, **report.to_dict()})
    return paths
