"""Spec: the statistics behind every number in the report.

- mean and 95% CI of a set of episodes: CI = 1.96 * std(ddof=0) / sqrt(n);
- a paired comparison A vs B: the mean per-episode difference A - B, its CI with the same
  formula applied to the differences, and a two-sided Wilcoxon signed-rank test;
- identical models (all differences zero): p = 1, not an error;
- Holm's step-down adjustment over a family of p-values.
"""

import math

import numpy as np
import pytest
from scipy import stats as sps

from fewshot_acdc.results.stats import holm_adjust, mean_ci95, paired_stats


def test_mean_ci95_uses_population_std():
    accs = [0.4, 0.6, 0.5, 0.7]
    mean, ci, n = mean_ci95(accs)
    assert n == 4
    assert mean == pytest.approx(0.55)
    # population std of (0.4, 0.6, 0.5, 0.7) is sqrt(0.0125)
    assert ci == pytest.approx(1.96 * math.sqrt(0.0125) / 2)


def test_mean_ci95_of_600_episodes_matches_numpy(episode_accuracies):
    accs = episode_accuracies(seed=3, n=600)
    mean, ci, n = mean_ci95(accs)
    assert (mean, n) == (pytest.approx(np.mean(accs)), 600)
    assert ci == pytest.approx(1.96 * np.std(accs) / np.sqrt(600))


def test_single_episode_has_zero_width_ci():
    assert mean_ci95([0.8]) == (pytest.approx(0.8), 0.0, 1)


def _wilcoxon_by_hand(d):
    """Two-sided signed-rank test with normal approximation and tie correction, zeros dropped;
    differences are compared as multiples of 1/75 (so equal differences are exact ties)."""
    d = np.rint(np.asarray(d, float) * 75) / 75
    d = d[d != 0]
    n = d.size
    ranks = sps.rankdata(np.abs(d))
    r_plus = ranks[d > 0].sum()
    r_minus = ranks[d < 0].sum()
    _, counts = np.unique(np.abs(d), return_counts=True)
    var = (n * (n + 1) * (2 * n + 1) - np.sum(counts**3 - counts) / 2) / 24
    z = (r_plus - n * (n + 1) / 4) / math.sqrt(var)
    return min(r_plus, r_minus), 2 * sps.norm.sf(abs(z))


def test_paired_difference_ci_and_wilcoxon_match_an_independent_computation(episode_accuracies):
    a = episode_accuracies(seed=1, n=600, p=0.52)
    b = episode_accuracies(seed=2, n=600, p=0.50)
    st = paired_stats(a, b)
    d = np.asarray(a) - np.asarray(b)
    assert st.n == 600
    assert st.mean_a == pytest.approx(np.mean(a)) and st.mean_b == pytest.approx(np.mean(b))
    assert st.mean_diff == pytest.approx(np.mean(d))
    assert st.ci95_diff == pytest.approx(1.96 * np.std(d) / np.sqrt(600))
    assert (st.ci_low, st.ci_high) == (
        pytest.approx(np.mean(d) - st.ci95_diff),
        pytest.approx(np.mean(d) + st.ci95_diff),
    )
    t, p = _wilcoxon_by_hand(d)
    assert st.statistic == pytest.approx(t)
    assert st.p_value == pytest.approx(p, rel=1e-9)
    assert st.n_nonzero == int(np.count_nonzero(np.abs(d) > 1e-9))


def test_equal_differences_are_ties_even_when_float_subtraction_disagrees():
    # 0.52 - 0.50 = 0.020000000000000018 but 0.30 - 0.28 = 0.01999999999999999
    a, b = [0.52, 0.30, 0.9, 0.4], [0.50, 0.28, 0.6, 0.5]
    st = paired_stats(a, b)
    # |d| = 0.02, 0.02, 0.3, 0.1 -> ranks 1.5, 1.5, 4, 3; R- = 3 (the one negative), R+ = 7
    assert st.statistic == 3.0 and st.n_nonzero == 4


def test_small_untied_sample_uses_scipys_exact_test():
    a = [0.50, 0.61, 0.47, 0.72, 0.55, 0.66, 0.43, 0.58]
    b = [0.49, 0.57, 0.52, 0.62, 0.40, 0.63, 0.45, 0.50]
    st = paired_stats(a, b)
    ref = sps.wilcoxon(np.round(np.subtract(a, b), 6))
    assert st.statistic == pytest.approx(ref.statistic)
    assert st.p_value == pytest.approx(ref.pvalue)
    assert "little power" in st.note  # only 8 differing episodes


def test_identical_models_give_p_one_instead_of_an_error(episode_accuracies):
    a = episode_accuracies(seed=5, n=100)
    st = paired_stats(a, list(a))
    assert (st.mean_diff, st.ci95_diff, st.statistic, st.p_value, st.n_nonzero) == (0, 0, 0, 1.0, 0)
    assert "all paired differences are zero" in st.note


def test_float_noise_counts_as_a_tie():
    st = paired_stats([0.1 + 0.2, 0.5], [0.3, 0.5])
    assert st.n_nonzero == 0 and st.p_value == 1.0


def test_float32_accuracies_still_tie(episode_accuracies):
    # evaluators compute accuracies in float32: 11/75 arrives as 0.14666666090488434
    a64 = np.asarray(episode_accuracies(seed=1, n=300, p=0.55))
    b64 = np.asarray(episode_accuracies(seed=2, n=300, p=0.50))
    a32, b32 = a64.astype(np.float32).astype(float), b64.astype(np.float32).astype(float)
    exact, noisy = paired_stats(a64, b64), paired_stats(a32, b64)  # one side float32 only
    assert noisy.n_nonzero == exact.n_nonzero
    assert noisy.statistic == exact.statistic and noisy.p_value == pytest.approx(exact.p_value)
    assert paired_stats(a32, b32).statistic == exact.statistic


def test_paired_stats_rejects_unequal_lengths():
    with pytest.raises(ValueError):
        paired_stats([0.5, 0.6], [0.5])


def test_holm_adjustment():
    # sorted: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> monotone max 0.06
    assert holm_adjust([0.01, 0.04, 0.03, None]) == [
        pytest.approx(0.03), pytest.approx(0.06), pytest.approx(0.06), None
    ]
    assert holm_adjust([0.6, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm_adjust([]) == []
