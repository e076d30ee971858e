"""Specification of the atoms analysis: dictionaries at init and after adaptation, fixed bases."""
import csv
import json

import numpy as np
import pytest

from fewshot_acdc.analysis import AnalysisError, adaptation_trajectory, layer_atoms, open_run, run_atoms
from fewshot_acdc.models import create_backbone
from fewshot_acdc.nn import fourier_bessel_atoms
from fewshot_acdc.runs.checkpoint import load_checkpoint


def test_initial_atoms_are_the_checkpoint_and_adapted_atoms_are_what_maml_adapts(acdc_run):
    run = open_run(acdc_run)
    episode = run.episode(1)
    trajectory = adaptation_trajectory(run, episode, 2)
    report = layer_atoms(run.model, trajectory[0], trajectory[-1])
    saved = load_checkpoint(acdc_run / "checkpoints" / "best.pt")["model"]
    assert [entry.layer for entry in report] == ["blocks.1.0", "blocks.2.0", "blocks.3.0"]  # the stem stays a conv
    independent = run.maml.adapt(dict(run.model.named_parameters()), episode.support_images,
                                 episode.support_labels, steps=2, create_graph=False)
    for entry in report:
        assert entry.kind == "acdc" and entry.learned and entry.initial.shape == (1, 4, 3, 3)
        np.testing.assert_array_equal(entry.initial, saved[f"{entry.layer}.atoms"].double().numpy())
        after = independent[f"{entry.layer}.atoms"].detach().double().numpy()
        np.testing.assert_allclose(entry.adapted, after, rtol=1e-5, atol=1e-7)
        expected = np.linalg.norm((after - entry.initial).reshape(1, 4, 9), axis=-1)
        np.testing.assert_allclose(entry.change, expected, rtol=1e-4, atol=1e-8)
        assert np.all(entry.change > 0)  # scope "all" adapts the atoms
        np.testing.assert_allclose(entry.relative_change,
                                   expected / np.linalg.norm(entry.initial.reshape(1, 4, 9), axis=-1), rtol=1e-4)


def test_unadapted_atoms_show_no_change():
    model = create_backbone("conv4", "acdc-layer", atoms=3, num_classes=3, image_size=16)
    params = {name: p.detach() for name, p in model.named_parameters()}
    for entry in layer_atoms(model, params, dict(params)):
        assert np.all(entry.change == 0) and np.all(entry.relative_change == 0)


def test_dcf_and_basisconv_show_their_fixed_bases():
    dcf = create_backbone("conv4", "dcf", bessel_atoms=5, num_classes=3, image_size=16)
    params = {name: p.detach() for name, p in dcf.named_parameters()}
    report = layer_atoms(dcf, params, params)
    assert {entry.kind for entry in report} == {"dcf"} and not any(entry.learned for entry in report)
    np.testing.assert_allclose(report[0].initial, fourier_bessel_atoms(3, 5).double().numpy())
    assert report[0].adapted is None
    basis = create_backbone("conv4", "basis", rank=6, num_classes=3, image_size=16)
    [first, *_] = layer_atoms(basis, {name: p.detach() for name, p in basis.named_parameters()})
    assert first.kind == "basis" and first.initial.shape == (6, 64, 3, 3)
    np.testing.assert_array_equal(first.initial, basis.get_submodule(first.layer).basis.double().numpy())


def test_a_standard_model_has_no_atoms_to_show():
    model = create_backbone("conv4", "standard", num_classes=3, image_size=16)
    with pytest.raises(AnalysisError, match="no ACDC, DCF or BasisConv layer.*coefficients"):
        layer_atoms(model, {name: p.detach() for name, p in model.named_parameters()})


def test_run_atoms_writes_the_figure_and_one_csv_row_per_atom(acdc_run, tmp_path):
    paths = run_atoms(acdc_run, tmp_path / "out", episode=0, figure_format="svg")
    assert paths["figure"].name == "atoms.svg" and paths["figure"].read_text().lstrip().startswith("<?xml")
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == 3 * 4
    record = json.loads(paths["json"].read_text())
    assert record["atoms_adapted"] and record["inner_steps"] == 2
    assert np.array(record["layers"][0]["adapted"]).shape == (1, 4, 3, 3)
    assert float(rows[0]["change"]) == pytest.approx(record["layers"][0]["change"][0][0])
