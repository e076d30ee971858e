"""Specification of the coefficients analysis (ACDC paper section 2.2): kernel decomposition,
coefficient spectra, and CCA/SVCCA between layers."""
import json

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from fewshot_acdc.analysis import (AnalysisError, acdc_coefficients, canonical_correlations, decompose_kernel,
                                   effective_rank, open_run, run_coefficients, svcca)
from fewshot_acdc.analysis.coefficients import (analysis_images, atom_sublayer, coefficient_sublayer, svcca_reduce,
                                                three_by_three_convolutions)
from fewshot_acdc.models import create_backbone
from fewshot_acdc.runs.checkpoint import load_checkpoint


def test_nine_atoms_reconstruct_a_3x3_kernel_exactly():
    weight = torch.randn(6, 5, 3, 3, dtype=torch.float64)
    decomposition = decompose_kernel(weight)
    assert decomposition.atoms.shape == (9, 3, 3) and decomposition.coefficients.shape == (6, 5, 9)
    torch.testing.assert_close(decomposition.kernel(), weight, rtol=0, atol=1e-12)
    atoms = decomposition.atoms.reshape(9, 9)
    torch.testing.assert_close(atoms @ atoms.T, torch.eye(9, dtype=torch.float64), rtol=0, atol=1e-12)


def test_fewer_atoms_give_the_best_low_rank_kernel():
    weight = torch.randn(7, 4, 3, 3, dtype=torch.float64)
    singular_values = np.linalg.svd(weight.reshape(28, 9).numpy(), compute_uv=False)
    for atoms in (1, 4, 8):
        error = (decompose_kernel(weight, atoms).kernel() - weight).norm().item()
        assert error == pytest.approx(np.sqrt((singular_values[atoms:] ** 2).sum()), rel=1e-10)  # Eckart-Young


def test_atom_then_coefficient_sublayers_are_the_convolution():
    torch.manual_seed(1)
    weight, bias = torch.randn(4, 3, 3, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    features = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    decomposition = decompose_kernel(weight)
    responses = atom_sublayer(features, decomposition.atoms, (2, 2), (1, 1), (1, 1))
    assert responses.shape == (2, 3 * 9, 5, 5)
    torch.testing.assert_close(coefficient_sublayer(responses, decomposition.coefficients, bias),
                               F.conv2d(features, weight, bias, 2, 1), rtol=0, atol=1e-10)


def test_bad_kernels_and_atom_counts_are_refused():
    with pytest.raises(AnalysisError, match="1..9 atoms"):
        decompose_kernel(torch.randn(2, 2, 3, 3), 10)
    with pytest.raises(AnalysisError, match="1..9 atoms"):
        decompose_kernel(torch.randn(2, 2, 3, 3), 0)
    with pytest.raises(AnalysisError, match=r"\(C_out, C_in, kh, kw\)"):
        decompose_kernel(torch.randn(2, 9, 3))


def test_asking_to_decompose_a_layer_that_is_not_3x3_names_the_layers_that_are():
    model = create_backbone("resnet10", "standard", num_classes=3)
    eligible = [name for name, _ in three_by_three_convolutions(model)]
    assert "stem.0" not in eligible and "stages.0.0.conv1" in eligible
    with pytest.raises(AnalysisError, match=r"'stem.0' has a 7x7 kernel.*stages.0.0.conv1"):
        three_by_three_convolutions(model, ["stem.0"])
    with pytest.raises(AnalysisError, match=r"'stages.1.0.shortcut.0' has a 1x1 kernel"):
        three_by_three_convolutions(model, ["stages.1.0.shortcut.0"])
    with pytest.raises(AnalysisError, match="not an ordinary convolution"):
        three_by_three_convolutions(model, ["head"])


def direct_cca(x, y):
    """Textbook CCA: singular values of Sxx^-1/2 Sxy Syy^-1/2 from the covariance matrices."""
    x, y = x - x.mean(0), y - y.mean(0)
    n = x.shape[0]
    sxx, syy, sxy = x.T @ x / n, y.T @ y / n, x.T @ y / n
    whitened = scipy.linalg.fractional_matrix_power(sxx, -0.5) @ sxy @ scipy.linalg.fractional_matrix_power(syy, -0.5)
    return np.sort(scipy.linalg.svdvals(np.real(whitened)))[::-1]


def test_cca_matches_the_covariance_formula_on_random_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5))
    y = np.hstack([x[:, :2] @ rng.normal(size=(2, 2)), rng.normal(size=(120, 2))]) + 0.3 * rng.normal(size=(120, 4))
    np.testing.assert_allclose(canonical_correlations(x, y), direct_cca(x, y), rtol=1e-8, atol=1e-10)


def test_cca_ignores_invertible_linear_maps_and_refuses_too_few_points():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4))
    np.testing.assert_allclose(canonical_correlations(x, x @ rng.normal(size=(4, 4)) + 3.0), np.ones(4), atol=1e-10)
    assert canonical_correlations(x, rng.normal(size=(50, 3))).max() < 0.9
    with pytest.raises(AnalysisError, match="more than 7 data points"):
        canonical_correlations(x[:7], rng.normal(size=(7, 3)))


def test_svcca_keeps_the_directions_holding_99_percent_of_the_variance():
    rng = np.random.default_rng(2)
    basis, _ = np.linalg.qr(rng.normal(size=(200, 4)))
    x = basis @ np.diag([10.0, 5.0, 2.0, 0.01])  # variances 100, 25, 4: two directions hold 97%, three 99.99%
    assert svcca_reduce(x).shape == (200, 3)
    assert svcca(x, x).mean() == pytest.approx(1.0)


def test_effective_rank_counts_equally_strong_directions():
    assert effective_rank(np.ones(6)) == pytest.approx(6.0)
    assert effective_rank(np.array([3.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert 1.0 < effective_rank(np.array([3.0, 1.0, 0.1])) < 3.0


def test_a_standard_run_reports_every_3x3_layer(standard_run, tmp_path):
    paths = run_coefficients(standard_run, tmp_path / "out", episodes=4)
    record = json.loads(paths["json"].read_text())
    assert record["layers"] == ["blocks.0.0", "blocks.1.0", "blocks.2.0", "blocks.3.0"]
    assert all(error < 1e-6 for error in record["relative_reconstruction_error"].values())  # m = 9: exact
    saved = load_checkpoint(standard_run / "checkpoints" / "best.pt")["model"]
    for layer in record["layers"]:
        weight = saved[f"{layer}.weight"].double().numpy()
        spectrum = record["spectra"][layer]["singular_values"]
        # With all 9 orthonormal atoms the coefficients are the kernel in a rotated spatial basis.
        np.testing.assert_allclose(spectrum, np.linalg.svd(weight.reshape(weight.shape[0], -1), compute_uv=False),
                                   rtol=1e-6)
    similarity = np.array(record["svcca_similarity"])
    assert similarity.shape == (4, 4)
    np.testing.assert_allclose(similarity, similarity.T)
    np.testing.assert_allclose(np.diag(similarity), 1.0)
    assert np.all((similarity >= 0) & (similarity <= 1))
    assert len(paths["csv"].read_text().splitlines()) == 1 + sum(len(s["singular_values"])
                                                                 for s in record["spectra"].values())


def test_an_acdc_run_reports_its_shared_tensor_once(acdc_run):
    run = open_run(acdc_run)
    report = acdc_coefficients(run.model, run.initial_parameters(), analysis_images(run, 4))
    assert list(report.spectra) == ["coefficient_bank.net"]
    assert report.spectrum_users["coefficient_bank.net"] == ["blocks.1.0", "blocks.2.0", "blocks.3.0"]
    shared = load_checkpoint(acdc_run / "checkpoints" / "best.pt")["model"]["coefficient_bank.net"]
    np.testing.assert_allclose(report.spectra["coefficient_bank.net"],
                               np.linalg.svd(shared.double().numpy().reshape(64, 64 * 4), compute_uv=False), rtol=1e-8)
    assert report.similarity.shape == (3, 3)


def test_decomposition_options_are_refused_for_an_acdc_run(acdc_run, tmp_path):
    with pytest.raises(AnalysisError, match="ACDC run.*drop --atoms"):
        run_coefficients(acdc_run, tmp_path / "out", atoms=4)
