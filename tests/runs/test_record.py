"""The typed run record (fewshot_acdc.runs.record): what training and evaluation write and the
results module reads back, with the package's one 95% CI."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from fewshot_acdc.runs.record import (BenchmarkRecord, EvaluationContext, EvaluationRecord, RecordError,
                                      TrainingFailure, TrainingSummary, mean_ci95, read_summary)

# The keys the writers have always written, in their order (docs/run_directory.md).
SUMMARY_KEYS = ["status", "backbone", "conv", "size", "group_size", "adapt", "first_order", "head_init", "dataset", "ways",
                "shots", "image_size", "iterations", "seed", "total_parameters", "adapted_parameters",
                "seconds_per_meta_step", "peak_memory_mb", "best_val_accuracy", "best_iteration", "device",
                "config_changes", "world_size", "stopped_early"]
CONTEXT_KEYS = ["batchnorm", "adapt", "inner_lr", "learn_inner_lr", "head_init", "created", "source", "machine"]
EVAL_KEYS = ["dataset", "seed", "split", "ways", "shots", "queries", "episodes", "episode_set", "inner_steps_eval",
             "checkpoint", "checkpoint_iteration", "mean_accuracy", "ci95", "per_episode_accuracy"] + CONTEXT_KEYS
BENCHMARK_KEYS = ["benchmark", "runs", "error_rate", "per_run_error_rate", "inner_steps_eval", "checkpoint",
                  "checkpoint_iteration", "seed"] + CONTEXT_KEYS

CONTEXT = EvaluationContext(
    batchnorm="transductive: batch statistics of the support set in the inner loop and of the query set when scored",
    adapt="all", inner_lr={"atoms": 0.0001, "head": 0.05, "default": 0.001}, learn_inner_lr="none",
    created="2026-12-03T13:51:28+00:00", source={"git_commit": "e" * 40, "uncommitted_changes": False},
    machine={"hostname": "vm", "cpu_count": 2})

# A subset of experiments/results/omniglot-conv4-acdc-net/eval/test_5way_1shot.json, written before
# evaluations recorded their context (batchnorm, inner_lr, source, machine, ...).
OLD_EVAL = {
    "dataset": "omniglot", "seed": 0, "split": "test", "ways": 5, "shots": 1, "queries": 1, "episodes": 4,
    "episode_set": "omniglot-test-5w1s1q-seed0", "inner_steps_eval": 3, "checkpoint": "best",
    "checkpoint_iteration": 1500, "mean_accuracy": 0.75, "ci95": 0.4243524478543749,
    "per_episode_accuracy": [1.0, 0.0, 1.0, 1.0],
}
# A subset of experiments/results/omniglot-grid/conv4-standard-all-5w1s/summary.json: from before
# summaries recorded config_changes and world_size.
OLD_SUMMARY = {
    "status": "finished", "backbone": "conv4", "conv": "standard", "atoms": 8, "group_size": None, "adapt": "all",
    "first_order": False, "dataset": "omniglot", "ways": 5, "shots": 1, "image_size": 28, "iterations": 1000,
    "seed": 0, "total_parameters": 112005, "adapted_parameters": 112005,
    "seconds_per_meta_step": 0.8562193672070002, "peak_memory_mb": 782.8515625,
    "best_val_accuracy": 0.9065333381295204, "best_iteration": 1000, "device": "cpu",
}
# experiments/results/omniglot-conv4-acdc-net/eval/omniglot-all-runs.json, per-run errors shortened.
OLD_BENCHMARK = {"benchmark": "omniglot-all-runs", "runs": 2, "error_rate": 0.25, "per_run_error_rate": [0.2, 0.3],
                 "inner_steps_eval": 3, "checkpoint": "best", "checkpoint_iteration": 1500, "seed": 0}


def _through_json(payload):
    return json.loads(json.dumps(payload))


def test_evaluation_record_round_trip_writes_todays_keys():
    record = EvaluationRecord.from_accuracies(
        [0.8, 0.6, 1.0], dataset="omniglot", seed=0, split="test", ways=5, shots=1, queries=15,
        episode_set="omniglot-test-5w1s15q-seed0-4f55fa82", inner_steps_eval=3, checkpoint="best",
        checkpoint_iteration=1000, context=CONTEXT)
    payload = _through_json(record.to_json())
    assert list(payload) == EVAL_KEYS
    assert payload["episodes"] == 3 and payload["per_episode_accuracy"] == [0.8, 0.6, 1.0]
    assert (payload["mean_accuracy"], payload["ci95"]) == mean_ci95([0.8, 0.6, 1.0])[:2]
    assert EvaluationRecord.from_json(payload, "x.json") == record


def test_summary_and_failure_round_trip_writes_todays_keys():
    summary = TrainingSummary(**{k: v for k, v in OLD_SUMMARY.items() if k not in ("status", "atoms")},
                              config_changes=({"key": "iterations", "old": 10, "new": 20, "iteration": 10},),
                              world_size=2)
    payload = _through_json(summary.to_json())
    assert list(payload) == SUMMARY_KEYS and payload["status"] == "finished"
    assert read_summary(payload) == TrainingSummary.from_json(payload) == summary
    failure = TrainingFailure(error="training stopped at iteration 7: meta-loss nan", iteration=7, world_size=1)
    payload = _through_json(failure.to_json())
    assert list(payload) == ["status", "error", "iteration", "world_size"]
    assert read_summary(payload) == failure


def test_benchmark_record_round_trip_writes_todays_keys():
    record = BenchmarkRecord.from_errors([0.25, 0.5], inner_steps_eval=3, checkpoint="best",
                                         checkpoint_iteration=1500, seed=0, context=CONTEXT)
    payload = _through_json(record.to_json())
    assert list(payload) == BENCHMARK_KEYS
    assert payload["runs"] == 2 and payload["error_rate"] == pytest.approx(0.375)
    assert BenchmarkRecord.from_json(payload) == record


def test_old_files_read_with_documented_defaults():
    evaluation = EvaluationRecord.from_json(OLD_EVAL, "eval/test_5way_1shot.json")
    assert evaluation.context == EvaluationContext()  # every context field None
    assert evaluation.per_episode_accuracy == (1.0, 0.0, 1.0, 1.0) and evaluation.checkpoint_iteration == 1500
    assert evaluation.ci95 == pytest.approx(mean_ci95(OLD_EVAL["per_episode_accuracy"])[1])
    summary = TrainingSummary.from_json(OLD_SUMMARY, "summary.json")
    assert summary.config_changes == () and summary.world_size == 1 and summary.group_size is None
    assert summary.head_init is None  # before it was recorded: per class (fewshot_acdc.results reads it so)
    old_keys = {k: v for k, v in OLD_SUMMARY.items() if k != "atoms"}
    assert summary.to_json() == {**old_keys, "size": None, "config_changes": [], "world_size": 1, "head_init": None,
                                 "stopped_early": None}
    # `atoms` sized every kind before `size` was the one field; standard convolutions have none
    assert summary.size is None
    assert TrainingSummary.from_json({**OLD_SUMMARY, "conv": "basis", "atoms": 16}).size == 16
    older = {k: v for k, v in OLD_SUMMARY.items() if k != "conv"}  # from before `conv`: the ACDC sharing scope
    assert TrainingSummary.from_json({**older, "acdc": "net"}).conv == "acdc-net"
    assert TrainingFailure.from_json({"status": "failed", "error": "boom", "iteration": 12}).world_size == 1
    benchmark = BenchmarkRecord.from_json(OLD_BENCHMARK)
    assert benchmark.per_run_error_rate == (0.2, 0.3) and benchmark.context == EvaluationContext()
    assert BenchmarkRecord.from_json({"error_rate": 0.3}).per_run_error_rate is None
    # the minimum an eval file needs, as the results module's tests write them
    assert EvaluationRecord.from_json({"per_episode_accuracy": [0.5]}).split is None


@pytest.mark.parametrize("record, payload, field, detail", [
    (EvaluationRecord, {**OLD_EVAL, "per_episode_accuracy": [0.5, 1.5]}, "per_episode_accuracy",
     "per_episode_accuracy [1] = 1.5 is outside [0, 1]"),
    (EvaluationRecord, {k: v for k, v in OLD_EVAL.items() if k != "per_episode_accuracy"}, "per_episode_accuracy",
     "no per_episode_accuracy, so no CI can be computed"),
    (EvaluationRecord, {**OLD_EVAL, "shots": "one"}, "shots", "shots is not an integer ('one')"),
    (EvaluationRecord, {**OLD_EVAL, "source": "abc"}, "source", "source is not a JSON object (str)"),
    (TrainingSummary, {**OLD_SUMMARY, "total_parameters": "many"}, "total_parameters",
     "total_parameters is not an integer ('many')"),
    (TrainingSummary, {**OLD_SUMMARY, "status": "running"}, "status", "status is 'running', not 'finished'"),
    (BenchmarkRecord, {"benchmark": "omniglot-all-runs", "runs": 20}, "error_rate",
     "neither per_run_error_rate nor error_rate"),
])
def test_malformed_file_names_the_file_and_the_field(record, payload, field, detail):
    with pytest.raises(RecordError) as caught:
        record.from_json(payload, "runs/r/eval/test_5way_1shot.json")
    assert caught.value.field == field and caught.value.detail == detail
    assert str(caught.value) == f"runs/r/eval/test_5way_1shot.json: {detail}"


def test_a_summary_read_field_by_field_keeps_the_good_fields_and_reports_the_bad():
    summary, problems = TrainingSummary.read_fields({**OLD_SUMMARY, "total_parameters": "many", "ways": 2.5})
    assert [(p.field, p.detail) for p in problems] == [("ways", "ways is not an integer (2.5)"),
                                                       ("total_parameters", "total_parameters is not an integer ('many')")]
    assert summary.total_parameters is None and summary.ways is None and summary.adapted_parameters == 112005
    with pytest.raises(RecordError, match="status is 'failed', not 'finished'"):
        TrainingSummary.read_fields({"status": "failed"})


def test_not_an_object_is_a_record_error():
    with pytest.raises(RecordError, match="summary.json: expected a JSON object, got list"):
        read_summary([1, 2], "summary.json")
    with pytest.raises(RecordError, match="neither 'finished' nor 'failed'"):
        read_summary({"status": None})


def test_the_one_ci_is_population_std_against_numpy():
    values = np.random.default_rng(0).binomial(75, 0.6, size=600) / 75
    mean, ci95, n = mean_ci95(list(values))
    assert n == 600 and mean == pytest.approx(float(np.mean(values)), abs=0, rel=1e-15)
    assert ci95 == pytest.approx(1.96 * float(np.std(values, ddof=0)) / math.sqrt(600), rel=1e-12)
    assert ci95 < 1.96 * float(np.std(values, ddof=1)) / math.sqrt(600)  # not the sample std
    assert mean_ci95([0.2, 0.4, 0.6, 0.8])[:2] == (pytest.approx(0.5), pytest.approx(1.96 * 0.05 ** 0.5 / 2))
    with pytest.raises(ValueError):
        mean_ci95([])


def test_results_uses_the_same_ci_and_the_record_is_torch_free():
    from fewshot_acdc.results import stats
    assert stats.mean_ci95 is mean_ci95
    code = "import sys, fewshot_acdc.runs.record, fewshot_acdc.results.runs; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"


def test_training_and_evaluation_do_not_import_each_other():
    from pathlib import Path

    import fewshot_acdc.runs.evaluation as evaluation
    source = Path(evaluation.__file__).read_text(encoding="utf-8")
    assert "from .training" not in source and "import training" not in source


def test_results_reads_eval_files_through_the_record(tmp_path):
    from fewshot_acdc.results.runs import load_run
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps(OLD_SUMMARY))
    (run / "eval" / "test_5way_1shot.json").write_text(json.dumps(OLD_EVAL))
    (run / "eval" / "test_5way_5shot.json").write_text(json.dumps({**OLD_EVAL, "shots": 5, "queries": "fifteen"}))
    (run / "eval" / "omniglot-all-runs.json").write_text(json.dumps(OLD_BENCHMARK))
    record = load_run(run)
    assert record.status == "ok" and list(record.evals) == [("test", 5, 1)]
    assert record.problems == ["eval/test_5way_5shot.json: queries is not an integer ('fifteen'); ignored"]
    result = record.get_eval("test", 5, 1)
    assert result.stored_mean == OLD_EVAL["mean_accuracy"] and result.ci95 == mean_ci95(OLD_EVAL["per_episode_accuracy"])[1]
    assert record.omniglot.error_rate == pytest.approx(0.25) and record.omniglot.runs == 2


def test_episode_identities_round_trip_and_a_malformed_list_is_named():
    from fewshot_acdc.runs.record import EvaluationRecord, RecordError
    record = EvaluationRecord.from_accuracies([0.5, 1.0], episode_identities=((0, "a" * 16), (1, "b" * 16)))
    data = record.to_json()
    assert data["episode_identities"] == [{"index": 0, "hash": "a" * 16}, {"index": 1, "hash": "b" * 16}]
    assert EvaluationRecord.from_json(data) == record
    assert "protocol" not in data and EvaluationRecord.from_accuracies([0.5], protocol="episodes=1").to_json()[
        "protocol"] == "episodes=1"
    with pytest.raises(RecordError, match="episode_identities has 1 entries for 2 per-episode accuracies"):
        EvaluationRecord.from_json({**data, "episode_identities": data["episode_identities"][:1]}, "eval/x.json")
    with pytest.raises(RecordError, match=r"episode_identities \[1\]"):
        EvaluationRecord.from_json({**data, "episode_identities": [data["episode_identities"][0], {"index": "1"}]})
