"""Specification of the adaptation analysis: per-step query scores on the saved episodes."""
import json
import math
import shutil

import numpy as np
import pytest
import torch

from fewshot_acdc.analysis import AnalysisError, adaptation_curve, open_run, run_adaptation
from fewshot_acdc.analysis.adaptation import AdaptationCurve, check_same_episodes
from fewshot_acdc.analysis.__main__ import main
from fewshot_acdc.meta.functional import score_query


def test_the_score_after_the_evaluated_step_count_is_what_evaluation_reports(acdc_run):
    run = open_run(acdc_run)
    steps = run.config.inner_steps_eval
    curve = adaptation_curve(run, steps + 3, episodes=3)  # beyond the trained and evaluated steps
    assert curve.accuracy.shape == curve.loss.shape == (3, steps + 4)
    for index in range(3):
        loss, accuracy = run.maml.evaluate_episode(run.episode(index))  # MAML's own path
        assert curve.accuracy[index, steps] == pytest.approx(accuracy, abs=1e-6)
        assert curve.loss[index, steps] == pytest.approx(loss, rel=1e-5)
        later_loss, _ = run.maml.evaluate_episode(run.episode(index), steps=steps + 3)
        assert curve.loss[index, steps + 3] == pytest.approx(later_loss, rel=1e-5)


def test_step_zero_scores_the_meta_learned_initialisation_unchanged(standard_run):
    run = open_run(standard_run)
    curve = adaptation_curve(run, 1, episodes=2)
    for index in range(2):
        episode = run.episode(index)
        with torch.no_grad():
            loss, accuracy = score_query(run.model, dict(run.model.named_parameters()), episode.query_images,
                                         episode.query_labels)
        assert curve.loss[index, 0] == pytest.approx(float(loss), rel=1e-6)
        assert curve.accuracy[index, 0] == pytest.approx(float(accuracy))


def test_means_and_confidence_intervals_follow_the_results_convention(acdc_run):
    curve = adaptation_curve(open_run(acdc_run), 2, episodes=4)
    for step, row in enumerate(curve.summary):
        values = curve.accuracy[:, step]
        assert row["accuracy"] == pytest.approx(values.mean())
        assert row["accuracy_ci95"] == pytest.approx(1.96 * values.std() / math.sqrt(4))  # population std
        assert row["loss"] == pytest.approx(curve.loss[:, step].mean())
        assert row["episodes"] == 4


def test_several_runs_go_into_one_figure_with_their_numbers(acdc_run, standard_run, tmp_path):
    paths = run_adaptation([acdc_run, standard_run], tmp_path / "out", steps=3, episodes=2)
    assert paths["figure"].stat().st_size > 0 and paths["figure"].suffix == ".png"
    rows = paths["csv"].read_text().splitlines()
    assert len(rows) == 1 + 2 * 4  # header, two runs x steps 0..3
    record = json.loads(paths["json"].read_text())
    assert [entry["conv"] for entry in record["runs"]] == ["acdc-net", "standard"]
    assert record["runs"][0]["episode_set"] == record["runs"][1]["episode_set"]
    assert np.array(record["runs"][1]["per_episode_accuracy"]).shape == (2, 4)
    assert {"created", "source", "machine"} <= set(record), "an analysis names the code and machine behind it"


def test_curves_of_different_episode_sets_are_refused():
    curves = [AdaptationCurve("a", "run-a", "standard", "all", 1, 2, name, np.zeros((1, 2)), np.zeros((1, 2)))
              for name in ("builtin-test-3w1s2q-seed0-aaaa", "builtin-test-5w1s2q-seed0-aaaa")]
    with pytest.raises(AnalysisError, match="not scored on the same episodes"):
        check_same_episodes(curves)


def test_a_run_without_checkpoints_is_refused_with_what_to_do(acdc_run, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(acdc_run / "config.yaml", bare / "config.yaml")
    with pytest.raises(AnalysisError, match=r"no checkpoint checkpoints/best\.pt.*none.*first validation"):
        open_run(bare)
    assert main(["adaptation", "--run", str(bare), "--out", str(tmp_path / "out")]) == 1
    assert "no checkpoint" in capsys.readouterr().err
    with pytest.raises(AnalysisError, match="not a run directory"):
        open_run(tmp_path)
    with pytest.raises(AnalysisError, match="--checkpoint last"):
        shutil.copytree(acdc_run / "checkpoints", bare / "checkpoints")
        (bare / "checkpoints" / "best.pt").unlink()
        open_run(bare)


def test_negative_steps_are_refused(acdc_run):
    with pytest.raises(AnalysisError, match="steps must be >= 0"):
        adaptation_curve(open_run(acdc_run), -1, episodes=1)
