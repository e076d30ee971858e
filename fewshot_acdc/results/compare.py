"""Paired comparisons: two models scored on the *same* fixed episodes.

Two evaluations can be paired only when both name the same ``episode_set`` and hold the same
number of episodes, and, where both files list per-episode identities, the same episode at every
position; otherwise the comparison is returned with ``paired=False`` and the reason (naming the
first episode that differs). Files from before identities were recorded are paired by position,
with a note saying so.
For a paired comparison of A against B (difference = A - B, in accuracy):

* ``diff``: mean over episodes of ``acc_A - acc_B`` (equals ``mean_A - mean_B``);
* ``ci95``: ``1.96 * std(acc_A - acc_B, ddof=0) / sqrt(n)``, the half-width of a 95% CI of the
  difference (much narrower than the two separate CIs suggest, because the episodes are shared);
* ``statistic`` / ``p_value``: two-sided Wilcoxon signed-rank test on the differences
  (see :data:`fewshot_acdc.results.stats.WILCOXON_DESCRIPTION`);
* ``p_holm``: in a set of comparisons (:func:`default_comparisons`), Holm's adjusted p-value over
  all paired comparisons in the set, so that "significant" accounts for how many were made.

Default comparisons in a table, for every shot count:

* ``conv``: each decomposed-convolution row (ACDC, BasisConv, DCF, repetition) against the
  plain-convolution row(s) with the same dataset, backbone, adapt scope and first-order flag
  (A = decomposed, B = plain);
* ``adapt``: each adapt scope against ``all`` with the same dataset, backbone, conv (incl.
  size / group size) and first-order flag (A = the other scope, B = ``all``); when no row
  adapts ``all``, against the alphabetically first scope.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Sequence

from .runs import EvalResult, RunRecord, load_run
from .stats import holm_adjust, paired_stats
from .table import CELL_OK, ResultsTable, Row

DEFAULT_ALPHA = 0.05


@dataclass(frozen=True)
class PairedComparison:
    label_a: str
    label_b: str
    run_a: str | None
    run_b: str | None
    split: str
    ways: int
    shots: int
    kind: str  # "conv", "adapt" or "explicit"
    paired: bool
    dataset: str | None = None
    reason: str | None = None  # why not paired
    episode_set: str | None = None
    n: int | None = None
    mean_a: float | None = None
    ci95_a: float | None = None
    mean_b: float | None = None
    ci95_b: float | None = None
    diff: float | None = None
    ci95: float | None = None
    statistic: float | None = None
    p_value: float | None = None
    p_holm: float | None = None
    n_nonzero: int | None = None
    note: str | None = None

    @property
    def ci_low(self) -> float | None:
        return None if self.diff is None else self.diff - self.ci95

    @property
    def ci_high(self) -> float | None:
        return None if self.diff is None else self.diff + self.ci95

    @property
    def protocol(self) -> str:
        return f"{self.split} {self.ways}-way {self.shots}-shot"

    def significant(self, alpha: float = DEFAULT_ALPHA) -> bool | None:
        """Holm-adjusted p < alpha when available, else raw p < alpha; None if not paired."""
        p = self.p_holm if self.p_holm is not None else self.p_value
        if not self.paired or p is None:
            return None
        return p < alpha

    def verdict(self, alpha: float = DEFAULT_ALPHA) -> str:
        sig = self.significant(alpha)
        if sig is None:
            return "not paired"
        if not sig:
            return "no significant difference"
        return "A better" if self.diff > 0 else "B better"

    def to_dict(self, alpha: float = DEFAULT_ALPHA) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "dataset": self.dataset,
            "label_a": self.label_a,
            "label_b": self.label_b,
            "run_a": self.run_a,
            "run_b": self.run_b,
            "split": self.split,
            "ways": self.ways,
            "shots": self.shots,
            "paired": self.paired,
            "reason": self.reason,
            "episode_set": self.episode_set,
            "episodes": self.n,
            "mean_accuracy_a": self.mean_a,
            "ci95_a": self.ci95_a,
            "mean_accuracy_b": self.mean_b,
            "ci95_b": self.ci95_b,
            "difference": self.diff,
            "difference_ci95": self.ci95,
            "difference_ci_low": self.ci_low,
            "difference_ci_high": self.ci_high,
            "wilcoxon_statistic": self.statistic,
            "p_value": self.p_value,
            "p_holm": self.p_holm,
            "episodes_differing": self.n_nonzero,
            "significant": self.significant(alpha),
            "verdict": self.verdict(alpha),
            "note": self.note,
        }


def compare_evals(
    eval_a: EvalResult | None,
    eval_b: EvalResult | None,
    *,
    label_a: str,
    label_b: str,
    run_a: str | None = None,
    run_b: str | None = None,
    split: str = "test",
    ways: int = 5,
    shots: int = 1,
    kind: str = "explicit",
    dataset: str | None = None,
) -> PairedComparison:
    """Paired comparison of two evaluations (either may be ``None``: then not paired)."""
    base = dict(
        label_a=label_a,
        label_b=label_b,
        run_a=run_a,
        run_b=run_b,
        split=split,
        ways=ways,
        shots=shots,
        kind=kind,
        dataset=dataset,
    )
    protocol = f"{split} {ways}-way {shots}-shot"
    if eval_a is None or eval_b is None:
        who = " and ".join(
            name
            for name, e in ((run_a or label_a, eval_a), (run_b or label_b, eval_b))
            if e is None
        )
        return PairedComparison(paired=False, reason=f"no {protocol} evaluation for {who}", **base)
    base.update(mean_a=eval_a.mean, ci95_a=eval_a.ci95, mean_b=eval_b.mean, ci95_b=eval_b.ci95)
    reason = None
    if eval_a.episode_set is None or eval_b.episode_set is None:
        who = " and ".join(
            name
            for name, e in ((run_a or label_a, eval_a), (run_b or label_b, eval_b))
            if e.episode_set is None
        )
        reason = f"no episode_set recorded for {who}"
    elif eval_a.episode_set != eval_b.episode_set:
        reason = (
            f"different episode sets ({eval_a.episode_set!r} vs {eval_b.episode_set!r}): "
            "the episodes cannot be matched"
        )
    elif eval_a.episodes != eval_b.episodes:
        reason = (
            f"same episode set {eval_a.episode_set!r} but different episode counts "
            f"({eval_a.episodes} vs {eval_b.episodes})"
        )
    else:
        reason = _identity_mismatch(eval_a, eval_b, run_a or label_a, run_b or label_b)
    if reason:
        return PairedComparison(paired=False, reason=reason, **base)
    st = paired_stats(eval_a.per_episode_accuracy, eval_b.per_episode_accuracy)
    notes = [st.note] if st.note else []
    without = [name for name, e in ((run_a or label_a, eval_a), (run_b or label_b, eval_b))
               if e.episode_identities is None]
    if without:
        notes.append(f"paired by position: {' and '.join(without)} record(s) no per-episode identities")
    return PairedComparison(
        paired=True,
        episode_set=eval_a.episode_set,
        n=st.n,
        diff=st.mean_diff,
        ci95=st.ci95_diff,
        statistic=st.statistic,
        p_value=st.p_value,
        n_nonzero=st.n_nonzero,
        note="; ".join(notes) or None,
        **base,
    )


def _identity_mismatch(eval_a: EvalResult, eval_b: EvalResult, name_a: str, name_b: str) -> str | None:
    """Why two evaluations of one episode set cannot be paired episode by episode: the first
    position where their recorded episode identities differ (index and hash), or None."""
    if eval_a.episode_identities is None or eval_b.episode_identities is None:
        return None
    for position, (a, b) in enumerate(zip(eval_a.episode_identities, eval_b.episode_identities)):
        if a != b:
            return (f"episode {position} differs: {name_a} ({eval_a.file}) scored episode {a[0]} {a[1]}, "
                    f"{name_b} ({eval_b.file}) episode {b[0]} {b[1]}; the files do not hold the same episodes "
                    "in the same order")
    return None


def _as_record(run: RunRecord | str | os.PathLike) -> RunRecord:
    return run if isinstance(run, RunRecord) else load_run(run)


def paired_comparison(
    run_a: RunRecord | str | os.PathLike,
    run_b: RunRecord | str | os.PathLike,
    ways: int = 5,
    shots: int = 1,
    split: str = "test",
    *,
    label_a: str | None = None,
    label_b: str | None = None,
) -> PairedComparison:
    """Compare run A against run B on ``<split>_<ways>way_<shots>shot`` (difference = A - B).

    ``run_a`` / ``run_b`` are :class:`RunRecord` objects or run directory paths. The result is
    never an exception for unpairable runs: ``paired`` is False and ``reason`` says why.
    """
    a, b = _as_record(run_a), _as_record(run_b)
    return compare_evals(
        a.get_eval(split, ways, shots),
        b.get_eval(split, ways, shots),
        label_a=label_a or a.name,
        label_b=label_b or b.name,
        run_a=a.name,
        run_b=b.name,
        split=split,
        ways=ways,
        shots=shots,
        dataset=a.identity.dataset if a.identity.dataset == b.identity.dataset else None,
    )


def _compare_rows(table: ResultsTable, a: Row, b: Row, kind: str) -> list[PairedComparison]:
    out = []
    for k in table.shots:
        ca, cb = a.cells[k], b.cells[k]
        if ca.status != CELL_OK or cb.status != CELL_OK:
            continue  # nothing to compare (missing / conflicting cells are reported elsewhere)
        out.append(
            compare_evals(
                ca.eval,
                cb.eval,
                label_a=a.key.label,
                label_b=b.key.label,
                run_a=ca.run.name,
                run_b=cb.run.name,
                split=table.split,
                ways=table.ways,
                shots=k,
                kind=kind,
                dataset=a.key.dataset,
            )
        )
    return out


def default_comparisons(table: ResultsTable) -> list[PairedComparison]:
    """The comparisons a reader of the table wants (see the module docstring); Holm-adjusted."""
    out: list[PairedComparison] = []
    rows = table.rows
    # decomposed conv (ACDC, BasisConv, DCF, repetition) vs plain conv
    for a in rows:
        if not a.key.is_decomposed:
            continue
        for b in rows:
            k1, k2 = a.key, b.key
            if (
                not k2.is_decomposed
                and (k1.dataset, k1.backbone, k1.adapt, k1.first_order, k1.head_init, k1.variant)
                == (k2.dataset, k2.backbone, k2.adapt, k2.first_order, k2.head_init, k2.variant)
            ):
                out.extend(_compare_rows(table, a, b, "conv"))
    # adapt scope vs "all"
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        k = r.key
        groups.setdefault(
            (k.dataset, k.backbone, k.conv, k.size, k.group_size, k.first_order, k.head_init, k.variant), []
        ).append(r)
    for members in groups.values():
        scopes = sorted({r.key.adapt for r in members if r.key.adapt is not None})
        if len(scopes) < 2:
            continue
        ref_scope = "all" if "all" in scopes else scopes[0]
        refs = [r for r in members if r.key.adapt == ref_scope]
        for a in members:
            if a.key.adapt == ref_scope:
                continue
            for b in refs:
                out.extend(_compare_rows(table, a, b, "adapt"))
    return apply_holm(out)


def apply_holm(comparisons: Sequence[PairedComparison]) -> list[PairedComparison]:
    """Copies of ``comparisons`` with ``p_holm`` set over the whole family."""
    adjusted = holm_adjust([c.p_value if c.paired else None for c in comparisons])
    return [replace(c, p_holm=p) for c, p in zip(comparisons, adjusted)]
