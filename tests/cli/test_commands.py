"""Specification of the commands: run_maml.py and evaluate.py."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fewshot_acdc.cli import evaluate as evaluate_cli
from fewshot_acdc.cli import train as train_cli

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--dataset", "builtin", "--backbone", "conv4", "--acdc", "block", "--atoms", "4", "--image-size", "20",
        "--ways", "3", "--shots", "1", "--queries", "2", "--queries-eval", "2", "--inner-steps", "1",
        "--inner-steps-eval", "1", "--meta-batch", "2", "--iterations", "2", "--val-every", "2",
        "--val-episodes", "3", "--test-episodes", "4", "--device", "cpu", "--threads", "1", "--quiet"]


def test_unknown_flag_is_named_with_the_closest_valid_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(["--backbon", "resnet18"])
    assert exit_info.value.code == 2
    assert "unknown flag --backbon (did you mean '--backbone'?)" in capsys.readouterr().err


def test_bad_choice_lists_the_accepted_values(capsys):
    with pytest.raises(SystemExit):
        train_cli.main(["--acdc", "grid"])
    assert "invalid choice: 'grid'" in capsys.readouterr().err


def test_inconsistent_values_are_config_errors(capsys):
    with pytest.raises(SystemExit):
        train_cli.main(["--acdc", "none", "--adapt", "atoms"])
    assert "adapts ACDC atoms, but conv is 'standard'" in capsys.readouterr().err


def test_missing_miniimagenet_says_where_to_get_it_and_how_to_use_builtin(tmp_path, capsys):
    code = train_cli.main(["--backbone", "conv4", "--data-root", str(tmp_path / "nothing"), "--out",
                           str(tmp_path / "run"), "--quiet"])
    assert code == 1
    error = capsys.readouterr().err
    assert "nothing" in error and "builtin" in error


def test_train_then_resume_then_evaluate(tmp_path, capsys):
    run = tmp_path / "run"
    episodes = tmp_path / "episodes"
    assert train_cli.main(TINY + ["--out", str(run), "--episode-dir", str(episodes)]) == 0
    out = capsys.readouterr().out
    assert "test 3-way 1-shot:" in out
    assert json.loads((run / "summary.json").read_text())["iterations"] == 2
    # Continue the same run for two more meta-steps.
    assert train_cli.main(["--resume", str(run), "--iterations", "4", "--quiet", "--no-eval"]) == 0
    assert json.loads((run / "summary.json").read_text())["iterations"] == 4
    assert evaluate_cli.main(["--run", str(run), "--shots", "1", "2", "--checkpoint", "last", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "test 3-way 2-shot:" in out and "checkpoint=last" in out
    # the last checkpoint is not the run's protocol (best): a file of its own, the run's result stays
    assert (run / "eval" / "protocols" / "test_3way_2shot_checkpointlast.json").is_file()
    assert not (run / "eval" / "test_3way_2shot.json").exists()


def test_resume_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_cli.main(["--resume", str(tmp_path)])
    assert "not a run directory" in capsys.readouterr().err


def test_run_maml_script_help_lists_the_documented_flags():
    result = subprocess.run([sys.executable, str(ROOT / "run_maml.py"), "--help"], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0
    for flag in ("--backbone", "--acdc", "--atoms", "--rank", "--bessel-atoms", "--base-width", "--group-size", "--atom-drop", "--adapt", "--ways", "--shots",
                 "--queries", "--inner-steps", "--inner-steps-eval", "--inner-lr", "--meta-lr", "--meta-batch",
                 "--first-order", "--iterations", "--image-size", "--dataset", "--data-root", "--device", "--seed",
                 "--config", "--out", "--resume", "--quiet"):
        assert flag in result.stdout, flag


def test_evaluate_reports_a_missing_run(tmp_path, capsys):
    assert evaluate_cli.main(["--run", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_evaluate_help_gives_the_episodes_default_that_is_used():
    # Issue 17: it said "600" while a run's own test_episodes (200 in the quickstart) is used.
    episodes = next(a for a in evaluate_cli.build_parser()._actions if "--episodes" in a.option_strings)
    assert episodes.default is None and "test_episodes in the run's config.yaml" in episodes.help
    assert "600" not in episodes.help


def test_recompute_inner_steps_flag_reaches_the_config_and_maml():
    from fewshot_acdc.config import load_config
    from fewshot_acdc.models import create_backbone
    from fewshot_acdc.runs.builders import build_maml
    args = train_cli.build_parser().parse_args(["--recompute-inner-steps"])
    overrides = {key: getattr(args, key) for key in train_cli.FLAG_KEYS if getattr(args, key) is not None}
    assert overrides == {"recompute_inner_steps": True}
    config = load_config(None, {**overrides, "backbone": "conv4", "image_size": 20})
    model = create_backbone("conv4", "acdc-net", image_size=20, track_running_stats=False)
    assert build_maml(config, model).recompute_inner_steps is True
    assert train_cli.build_parser().parse_args([]).recompute_inner_steps is None  # absent: the config decides


def test_eval_batch_flags_reach_the_config_and_the_evaluation(monkeypatch):
    from fewshot_acdc.runs import evaluation
    assert train_cli.build_parser().parse_args(["--eval-batch", "4"]).eval_batch == 4
    assert "eval_batch" in train_cli.FLAG_KEYS  # what puts a flag into the config
    seen = {}

    def fake_evaluate_run(run, **options):
        seen.update(options)
        return []
    monkeypatch.setattr(evaluation, "evaluate_run", fake_evaluate_run)
    assert evaluate_cli.main(["--run", "somewhere", "--eval-batch", "3", "--quiet"]) == 0
    assert seen["eval_batch"] == 3
