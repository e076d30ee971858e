"""Specification of benchmarks/evaluation.py's report: sequential and batched evaluation side by
side on the same episodes, with the ratio and how far the results differ (no timing asserted)."""
import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "evaluation.py"
spec = importlib.util.spec_from_file_location("evaluation_benchmark", SCRIPT)
evaluation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(evaluation)


def test_a_tiny_run_reports_batched_next_to_sequential_with_provenance(tmp_path):
    out = tmp_path / "evaluation.json"
    assert evaluation.main(["--backbones", "conv4", "--convs", "acdc-net", "--scopes", "atoms", "--image-size", "16",
                            "--shots", "1", "--episodes", "3", "--eval-batch", "2,3", "--inner-steps-eval", "2",
                            "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert [entry["eval_batch"] for entry in row["batched"]] == [2, 3]
    for entry in row["batched"]:
        assert entry["over_sequential"] == entry["episodes_per_second"] / row["evaluation_episodes_per_second"]
        assert entry["max_accuracy_difference"] == 0.0 and entry["max_query_loss_difference"] < 1e-4
    assert len(report["source"]["git_commit"]) == 40 and report["machine"]["cpu_count"] >= 1
    assert report["settings"]["eval_batch"] == [2, 3]


def test_two_processes_score_the_same_episodes_as_one(tmp_path):
    out = tmp_path / "evaluation.json"
    assert evaluation.main(["--backbones", "conv4", "--convs", "acdc-net", "--scopes", "all", "--image-size", "16",
                            "--shots", "1", "--episodes", "5", "--eval-batch", "2", "--inner-steps-eval", "2",
                            "--processes", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    (split,) = row["processes"]
    assert split["world_size"] == 2 and split["max_accuracy_difference"] == 0.0
    assert split["over_sequential"] == split["episodes_per_second"] / row["evaluation_episodes_per_second"]
    assert report["settings"]["processes"] == [2]
