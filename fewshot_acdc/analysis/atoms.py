"""The spatial dictionaries of a run's decomposed convolutions, before and after adaptation.

ACDC's claim is that a few ``k x k`` atoms per layer carry the layer's spatial structure while the
(shared) coefficients carry the channel mixing, so adapting only the atoms adapts the network.
This analysis shows the learned atoms of every ACDC layer at the meta-learned initialisation and
after adapting to one test episode, with how much each atom moved. DCF's Fourier-Bessel atoms and
BasisConv's basis filters are fixed (buffers, never adapted), so for them it shows the bases.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from torch import nn

from ..meta.functional import Params
from ..nn import ACDCConv2d, BasisConv2d, DCFConv2d
from .common import (AnalysisError, PathLike, adaptation_trajectory, open_run, output_directory, save_figure,
                     write_csv, write_json)


@dataclass
class LayerAtoms:
    """One layer's dictionary. ``initial``: ACDC ``(G, m, kh, kw)``; DCF ``(K, k, k)``; BasisConv
    ``(r, C_in, kh, kw)``. ``adapted`` (ACDC only) after the inner loop; ``change[g, j]`` the L2
    norm of atom ``(g, j)``'s update and ``relative_change`` that over the atom's initial norm."""

    layer: str
    kind: str  # "acdc" | "dcf" | "basis"
    learned: bool
    initial: np.ndarray
    adapted: Optional[np.ndarray] = None
    change: Optional[np.ndarray] = None
    relative_change: Optional[np.ndarray] = None

    def to_dict(self) -> Dict[str, object]:
        record: Dict[str, object] = {"layer": self.layer, "kind": self.kind, "learned": self.learned,
                                     "shape": list(self.initial.shape), "initial": self.initial.tolist()}
        if self.adapted is not None:
            record.update(adapted=self.adapted.tolist(), change=self.change.tolist(),
                          relative_change=self.relative_change.tolist())
        return record


def dictionary_layers(model: nn.Module) -> List[tuple]:
    """``(name, module, kind)`` of every ACDC, DCF and BasisConv layer, in forward order."""
    kinds = ((ACDCConv2d, "acdc"), (DCFConv2d, "dcf"), (BasisConv2d, "basis"))
    found = []
    for name, module in model.named_modules():
        for layer_type, kind in kinds:
            if isinstance(module, layer_type):
                found.append((name, module, kind))
    return found


def layer_atoms(model: nn.Module, initial: Params, adapted: Optional[Params] = None) -> List[LayerAtoms]:
    """Every dictionary of ``model``; ACDC atoms read from ``initial`` / ``adapted`` (name -> tensor
    as ``model.named_parameters()``), so a never-adapted scope shows zero change, not a guess."""
    layers = dictionary_layers(model)
    if not layers:
        raise AnalysisError(f"this {type(model).__name__} has no ACDC, DCF or BasisConv layer: a standard-conv "
                            "run has no atoms to show (its kernels can be decomposed with the "
                            "'coefficients' analysis)")
    report = []
    for name, module, kind in layers:
        if kind == "acdc":
            key = f"{name}.atoms"
            before = initial[key].detach().double().cpu().numpy()
            entry = LayerAtoms(name, kind, True, before)
            if adapted is not None:
                after = adapted[key].detach().double().cpu().numpy()
                change = np.sqrt(((after - before) ** 2).sum(axis=(2, 3)))
                norm = np.sqrt((before ** 2).sum(axis=(2, 3)))
                entry.adapted, entry.change = after, change
                entry.relative_change = np.divide(change, norm, out=np.zeros_like(change), where=norm > 0)
            report.append(entry)
        elif kind == "dcf":
            report.append(LayerAtoms(name, kind, False, module.bases.detach().double().cpu().numpy()))
        else:
            report.append(LayerAtoms(name, kind, False, module.basis.detach().double().cpu().numpy()))
    return report


def _grid_rows(entry: LayerAtoms, max_atoms: int) -> List[tuple]:
    """``(row label, [k x k images])`` for one layer's rows in the figure."""
    if entry.kind == "acdc":
        group0 = lambda array: [array[0, j] for j in range(min(array.shape[1], max_atoms))]  # noqa: E731
        rows = [(f"{entry.layer}\ninit", group0(entry.initial))]
        if entry.adapted is not None:
            rows.append(("adapted", group0(entry.adapted)))
            rows.append(("change", group0(entry.adapted - entry.initial)))
        return rows
    if entry.kind == "dcf":
        return [(f"{entry.layer}\nFourier-Bessel (fixed)", [a for a in entry.initial[:max_atoms]])]
    # BasisConv: each basis filter spans every input channel; show its first input channel.
    return [(f"{entry.layer}\nbasis, channel 0 (fixed)", [a[0] for a in entry.initial[:max_atoms]])]


def draw_atoms(report: List[LayerAtoms], max_atoms: int = 16):
    """Image grid: per ACDC layer the atoms at init, adapted and their difference (one colour
    scale per layer, symmetric around 0 so a sign flip is visible); per fixed basis one row."""
    from matplotlib.figure import Figure
    rows = [(entry, label, images) for entry in report for label, images in _grid_rows(entry, max_atoms)]
    columns = max(len(images) for _, _, images in rows)
    figure = Figure(figsize=(1.0 + 0.8 * columns, 0.85 * len(rows) + 0.6))
    axes = figure.subplots(len(rows), columns, squeeze=False)
    scales: Dict[int, float] = {}
    for entry, _, images in rows:
        scales[id(entry)] = max(scales.get(id(entry), 0.0), max(float(np.abs(image).max()) for image in images))
    for row, (entry, label, images) in enumerate(rows):
        scale = scales[id(entry)] or 1.0
        for column in range(columns):
            ax = axes[row, column]
            ax.set_xticks([])
            ax.set_yticks([])
            if column >= len(images):
                ax.axis("off")
                continue
            ax.imshow(images[column], cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
            if row == 0 or rows[row - 1][0] is not entry:
                ax.set_title(f"{column}", fontsize=7)
            if label == "change" and entry.change is not None:
                ax.set_xlabel(f"{entry.change[0, column]:.2g}", fontsize=6)
        axes[row, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    figure.suptitle("atoms (group 0 of grouped layers); 'change' = adapted - init, L2 norm below", fontsize=9)
    return figure


def run_atoms(run_dir: PathLike, out: PathLike, *, episode: int = 0, steps: Optional[int] = None,
              checkpoint: str = "best", split: str = "test", device: str = "cpu", data_root: Optional[str] = None,
              figure_format: str = "png") -> Dict[str, Path]:
    """Atoms of ``run_dir`` at init and after ``steps`` (default: its ``inner_steps_eval``) inner
    steps on test episode ``episode``; writes ``atoms.<png|svg>``, ``atoms.csv`` (one row per atom:
    layer, group, atom, initial norm, change, relative change) and ``atoms.json`` (every value)."""
    run = open_run(run_dir, checkpoint=checkpoint, split=split, device=device, data_root=data_root)
    steps = run.config.inner_steps_eval if steps is None else steps
    trajectory = adaptation_trajectory(run, run.episode(episode), steps)
    report = layer_atoms(run.model, trajectory[0], trajectory[-1])
    out = output_directory(out)
    paths = {"figure": save_figure(draw_atoms(report), out / f"atoms.{figure_format}")}
    paths["csv"] = write_csv(out / "atoms.csv",
                             ["layer", "kind", "group", "atom", "initial_norm", "change", "relative_change"],
                             ([entry.layer, entry.kind, group, atom,
                               float(np.sqrt((entry.initial[group, atom] ** 2).sum())),
                               float(entry.change[group, atom]), float(entry.relative_change[group, atom])]
                              for entry in report if entry.change is not None
                              for group in range(entry.change.shape[0]) for atom in range(entry.change.shape[1])))
    adapted_atoms = any(run.maml.adapted_roles[i] == "atoms" for i in range(len(run.maml.adapted_names)))
    paths["json"] = write_json(out / "atoms.json", {
        "analysis": "atoms", "run": str(run.root), "checkpoint": checkpoint, "conv": run.config.conv,
        "adapt": run.config.adapt, "atoms_adapted": adapted_atoms, "split": split, "episode": episode,
        "episode_set": run.episode_set(episode + 1).name, "inner_steps": steps,
        "layers": [entry.to_dict() for entry in report]})
    return paths
