"""Spec: paired comparisons between two models evaluated on the same fixed episodes.

- ``paired_comparison(run_a, run_b, ways, shots)`` accepts run directories or records and
  reports A - B: mean difference, its 95% CI (1.96 * std(diff) / sqrt(n)) and a Wilcoxon
  signed-rank test;
- pairing requires the same ``episode_set`` and the same episode count, and, where both files
  list per-episode identities, the same episode at every position; otherwise the result says why
  not, naming the first episode that differs (never an exception); files without identities are
  paired by position, with a note;
- default comparisons in a table: each ACDC conv against the plain conv, each adapt scope
  against ``all``, per shot count, Holm-adjusted as one family.
"""

import numpy as np
import pytest
from scipy import stats as sps

from fewshot_acdc.results import build_table, collect_runs, default_comparisons, paired_comparison


def test_paired_comparison_of_two_run_directories(make_run, episode_accuracies):
    a = episode_accuracies(seed=10, n=200, p=0.55)
    b = episode_accuracies(seed=11, n=200, p=0.50)
    ra = make_run("acdc", conv="acdc-net", evals={"test_5way_1shot.json": a})
    rb = make_run("std", conv="standard", evals={"test_5way_1shot.json": b})
    c = paired_comparison(ra, rb, ways=5, shots=1)
    d = np.subtract(a, b)
    ref = sps.wilcoxon(np.round(d, 6))  # differences rounded so equal differences tie exactly
    assert c.paired and c.reason is None
    assert (c.run_a, c.run_b, c.n) == ("acdc", "std", 200)
    assert c.episode_set == "miniimagenet-test-5w1s15q-seed0"
    assert c.mean_a == pytest.approx(np.mean(a)) and c.mean_b == pytest.approx(np.mean(b))
    assert c.ci95_a == pytest.approx(1.96 * np.std(a) / np.sqrt(200))
    assert c.diff == pytest.approx(np.mean(d))
    assert c.ci95 == pytest.approx(1.96 * np.std(d) / np.sqrt(200))
    assert (c.ci_low, c.ci_high) == (pytest.approx(np.mean(d) - c.ci95), pytest.approx(np.mean(d) + c.ci95))
    assert c.statistic == pytest.approx(ref.statistic)
    assert c.p_value == pytest.approx(ref.pvalue)
    assert c.n_nonzero == int(np.count_nonzero(d))
    assert c.verdict() == ("A better" if c.p_value < 0.05 else "no significant difference")


def test_swapping_a_and_b_flips_the_sign_only(make_run, episode_accuracies):
    ra = make_run("a", evals={"test_5way_1shot.json": episode_accuracies(1, p=0.6)})
    rb = make_run("b", evals={"test_5way_1shot.json": episode_accuracies(2, p=0.4)})
    ab, ba = paired_comparison(ra, rb), paired_comparison(rb, ra)
    assert ab.diff == pytest.approx(-ba.diff) and ab.ci95 == pytest.approx(ba.ci95)
    assert ab.p_value == pytest.approx(ba.p_value)
    assert (ab.verdict(), ba.verdict()) == ("A better", "B better")


def test_identical_accuracies_are_no_difference(make_run):
    accs = [0.5, 0.6, 0.7]
    c = paired_comparison(make_run("a", evals={"test_5way_1shot.json": accs}),
                          make_run("b", evals={"test_5way_1shot.json": accs}))
    assert (c.paired, c.diff, c.ci95, c.p_value) == (True, 0.0, 0.0, 1.0)
    assert c.verdict() == "no significant difference"


@pytest.mark.parametrize(
    "episode_set_b, n_b, reason",
    [
        ("miniimagenet-test-5w1s15q-seed1", 3,
         "different episode sets ('miniimagenet-test-5w1s15q-seed0' vs "
         "'miniimagenet-test-5w1s15q-seed1'): the episodes cannot be matched"),
        ("default", 4,
         "same episode set 'miniimagenet-test-5w1s15q-seed0' but different episode counts (3 vs 4)"),
        (None, 3, "no episode_set recorded for b"),
    ],
)
def test_unpairable_evaluations_say_why(make_run, eval_payload, episode_set_b, n_b, reason):
    ra = make_run("a", evals={"test_5way_1shot.json": [0.5, 0.6, 0.7]})
    rb = make_run("b", evals={
        "test_5way_1shot.json": eval_payload([0.4] * n_b, episode_set=episode_set_b)
    })
    c = paired_comparison(ra, rb, ways=5, shots=1)
    assert not c.paired and c.reason == reason
    assert c.diff is None and c.p_value is None and c.verdict() == "not paired"
    assert c.mean_a == pytest.approx(0.6) and c.mean_b == pytest.approx(0.4)  # still shown


def test_missing_evaluation_is_not_paired(make_run):
    ra = make_run("a", evals={"test_5way_1shot.json": [0.5]})
    rb = make_run("b", shots=5, evals={"test_5way_5shot.json": [0.5]})
    c = paired_comparison(ra, rb, ways=5, shots=1)
    assert (c.paired, c.reason) == (False, "no test 5-way 1-shot evaluation for b")


def test_default_comparisons_acdc_vs_standard_and_adapt_vs_all(make_run, episode_accuracies):
    seeds = iter(range(100))
    for conv, adapt in [("standard", "all"), ("acdc-net", "all"), ("acdc-net", "atoms")]:
        for shots in (1, 5):
            make_run(f"{conv}-{adapt}-{shots}", conv=conv, adapt=adapt, shots=shots,
                     evals={f"test_5way_{shots}shot.json": episode_accuracies(next(seeds))})
    make_run("other-backbone", backbone="resnet10", conv="acdc-net",
             evals={"test_5way_1shot.json": episode_accuracies(50)})
    records = collect_runs([make_run.root])
    comps = default_comparisons(build_table(records))
    got = [(c.kind, c.run_a, c.run_b, c.shots) for c in comps]
    assert got == [
        ("conv", "runs/acdc-net-all-1", "runs/standard-all-1", 1),
        ("conv", "runs/acdc-net-all-5", "runs/standard-all-5", 5),
        ("adapt", "runs/acdc-net-atoms-1", "runs/acdc-net-all-1", 1),
        ("adapt", "runs/acdc-net-atoms-5", "runs/acdc-net-all-5", 5),
    ]  # conv comparisons keep the adapt scope fixed; resnet10 has no plain-conv partner
    assert len(comps) == 4
    assert comps[0].label_a == "ResNet18 · MAML + ACDC-net (8 atoms) · adapt all"
    assert comps[0].label_b == "ResNet18 · MAML · adapt all"
    # Holm over the four p-values, computed here by hand
    p = np.array([c.p_value for c in comps])
    order = np.argsort(p)
    holm = np.minimum(1, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    expected = np.empty_like(p)
    expected[order] = holm
    assert [c.p_holm for c in comps] == pytest.approx(list(expected))


def _with_identities(payload, hashes):
    return {**payload, "episode_identities": [{"index": i, "hash": h} for i, h in enumerate(hashes)]}


def test_episodes_are_paired_on_their_identities_and_the_first_difference_is_named(make_run, eval_payload,
                                                                                      episode_accuracies):
    a, b = episode_accuracies(1, n=4), episode_accuracies(2, n=4)
    same = [f"{i:016x}" for i in range(4)]
    ra = make_run("a", evals={"test_5way_1shot.json": _with_identities(eval_payload(a), same)})
    rb = make_run("b", evals={"test_5way_1shot.json": _with_identities(eval_payload(b), same)})
    paired = paired_comparison(ra, rb)
    assert paired.paired and "position" not in (paired.note or "")
    other = same[:2] + ["ffffffffffffffff"] + same[3:]
    rc = make_run("c", evals={"test_5way_1shot.json": _with_identities(eval_payload(b), other)})
    refused = paired_comparison(ra, rc)
    assert not refused.paired
    assert refused.reason.startswith("episode 2 differs: a (eval/test_5way_1shot.json) scored episode 2 "
                                     f"{same[2]}, c (eval/test_5way_1shot.json) episode 2 ffffffffffffffff")


def test_files_without_identities_are_paired_by_position_with_a_note(make_run, eval_payload, episode_accuracies):
    a, b = episode_accuracies(1, n=4), episode_accuracies(2, n=4)
    ra = make_run("a", evals={"test_5way_1shot.json": _with_identities(eval_payload(a), [f"{i:016x}" for i in range(4)])})
    rb = make_run("old", evals={"test_5way_1shot.json": b})  # written before identities were recorded
    c = paired_comparison(ra, rb)
    assert c.paired and c.n == 4
    assert "paired by position: old record(s) no per-episode identities" in c.note
