"""Statistics used by the results module: episode means with 95% confidence intervals, paired
differences between two models scored on the same episodes, and Holm's step-down correction.

Conventions (the same as ``docs/run_directory.md`` and "A Closer Look at Few-shot
Classification"): a 95% CI half-width is ``1.96 * std(x) / sqrt(n)`` with the *population*
standard deviation (``ddof=0``). Accuracies are fractions in [0, 1] throughout this module.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# The one 95% CI of the package (torch-free, in the run record that training and evaluation write).
from ..runs.record import Z95, mean_ci95  # noqa: F401  (re-exported)

#: Decimals to which paired differences are rounded before the signed-rank test. Per-episode
#: accuracies are multiples of 1 / (ways * queries) (at least 0.001 apart for any realistic
#: episode), but evaluators compute them in float32, so equal differences can differ by ~1e-8;
#: rounding makes them exact ties (and exact zeros) again. The mean difference and its CI use
#: the unrounded differences.
DIFFERENCE_DECIMALS = 6

WILCOXON_DESCRIPTION = (
    "Wilcoxon signed-rank test, two-sided (scipy.stats.wilcoxon, method='auto', on the "
    "differences rounded to 1e-6; zero_method='wilcox' drops episodes with equal accuracy; with "
    "current scipy the p-value is exact for small samples and a normal approximation with tie "
    "correction for more than 50 episodes)"
)


def as_accuracy_array(values: Sequence[float]) -> np.ndarray:
    """Validated 1-D float array of accuracies (finite, in [0, 1], at least one value)."""
    a = np.asarray(values, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"expected a flat list of accuracies, got shape {a.shape}")
    if a.size == 0:
        raise ValueError("no accuracies")
    if not np.all(np.isfinite(a)):
        raise ValueError("accuracies must be finite")
    if np.any(a < 0.0) or np.any(a > 1.0):
        raise ValueError("accuracies must lie in [0, 1]")
    return a


@dataclass(frozen=True)
class PairedStats:
    """Episode-by-episode comparison of model A against model B (difference = A - B)."""

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    ci95_diff: float
    statistic: float | None  # Wilcoxon T = min(R+, R-); None when undefined
    p_value: float | None
    n_nonzero: int  # episodes with a non-zero difference (the ones the test ranks)
    note: str | None = None

    @property
    def ci_low(self) -> float:
        return self.mean_diff - self.ci95_diff

    @property
    def ci_high(self) -> float:
        return self.mean_diff + self.ci95_diff


def paired_stats(acc_a: Sequence[float], acc_b: Sequence[float]) -> PairedStats:
    """Mean difference A - B with its 95% CI and a two-sided Wilcoxon signed-rank test.

    ``acc_a[i]`` and ``acc_b[i]`` must be the accuracies of the two models on the same episode.
    When every difference is zero the test is undefined; the result then has statistic 0 and
    p-value 1 (no evidence of a difference) and says so in ``note``.
    """
    from scipy import stats as sps

    a = np.asarray(acc_a, dtype=float)
    b = np.asarray(acc_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples need equal 1-D shapes, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("paired_stats needs at least one episode")
    d = a - b
    n = int(d.size)
    mean_diff, ci_diff, _ = mean_ci95(d)
    d = np.round(d, DIFFERENCE_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0
    n_nonzero = int(np.count_nonzero(d))
    note = None
    if n_nonzero == 0:
        statistic, p_value = 0.0, 1.0
        note = "all paired differences are zero: the models agree on every episode"
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided", method="auto")
        statistic = float(res.statistic)
        p_value = float(res.pvalue)
        if not math.isfinite(p_value):  # pragma: no cover - defensive, scipy-version dependent
            p_value = None
            note = "Wilcoxon p-value undefined for these differences"
        elif n_nonzero < 10:
            note = f"only {n_nonzero} episodes differ: the test has little power"
        if caught and note is None:
            note = "; ".join(sorted({str(w.message) for w in caught}))
    return PairedStats(
        n=n,
        mean_a=float(np.mean(a)),
        mean_b=float(np.mean(b)),
        mean_diff=mean_diff,
        ci95_diff=ci_diff,
        statistic=statistic,
        p_value=p_value,
        n_nonzero=n_nonzero,
        note=note,
    )


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (family-wise error control); ``None`` entries stay
    ``None`` and do not count towards the family size."""
    indexed = [(p, i) for i, p in enumerate(p_values) if p is not None]
    m = len(indexed)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(indexed)):
        adjusted = min(1.0, (m - rank) * p)
        running = max(running, adjusted)
        out[i] = running
    return out
