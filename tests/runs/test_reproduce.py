"""Specification of fewshot_acdc.runs.reproduce: a recorded run's first K meta-steps re-trained on
the current code are "identical" to its metrics.jsonl, or the first step, key and values that
differ are named; old records read through the one migration; runs changed on resume are
compared up to the change."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fewshot_acdc.runs.reproduce import compare_metrics, reproduce
from fewshot_acdc.runs.training import train

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def recorded(tiny_config, tmp_path):
    run = tmp_path / "run"
    train(tiny_config, run, progress=False)
    return run


def test_a_recorded_run_reproduces_identically(recorded):
    outcome = reproduce(recorded, 4)
    assert outcome.identical and outcome.lines == 4
    assert outcome.describe().endswith("first 4 meta-step(s): identical (4 metrics line(s) compared)")


def test_the_first_difference_is_named_with_both_values(recorded):
    lines = [json.loads(line) for line in (recorded / "metrics.jsonl").read_text().splitlines()]
    changed = lines[2]["meta_loss"] + 1e-9
    lines[2]["meta_loss"] = changed
    lines[2]["seconds"] = 1e9  # wall-clock time is not compared
    (recorded / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    outcome = reproduce(recorded, 5)
    assert not outcome.identical and (outcome.step, outcome.key, outcome.recorded) == (3, "meta_loss", changed)
    assert "differ at step 3: meta_loss recorded" in outcome.describe()
    assert reproduce(recorded, 2).identical
    assert reproduce(recorded, 5, tolerance=1e-6).identical


def test_an_old_record_reads_through_the_migration(recorded):
    text = (recorded / "config.yaml").read_text().replace("conv: acdc-net\n", "acdc: net\nconv: null\n")
    (recorded / "config.yaml").write_text(text)  # as configs were saved before `conv` was the one key
    assert reproduce(recorded, 3).identical


def test_a_run_changed_on_resume_is_compared_up_to_the_change(tiny_config, tmp_path):
    run = tmp_path / "run"
    train(tiny_config.replace(iterations=3), run, progress=False)
    train(tiny_config.replace(iterations=6, meta_lr=0.001), run, resume=True, progress=False)
    outcome = reproduce(run, 6)
    assert outcome.identical and outcome.steps == 3 and "a resume changed meta_lr, iterations from step 4" in outcome.note


def test_more_steps_than_recorded_are_refused(recorded):
    with pytest.raises(ValueError, match="recorded 6 of 6 meta-steps; --steps 7 asks for more"):
        reproduce(recorded, 7)


def test_missing_lines_are_a_difference():
    outcome = compare_metrics("r", [{"iteration": 1, "meta_loss": 1.0}, {"iteration": 2, "meta_loss": 1.0}],
                              [{"iteration": 1, "meta_loss": 1.0}], 2)
    assert not outcome.identical and outcome.step == 2 and outcome.key == "iteration"


def test_the_command_delegates_to_the_cli_and_exits_by_the_outcome(recorded):
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "fewshot_acdc.runs.reproduce", str(recorded), "--steps", "2"],
                            capture_output=True, text=True, cwd=ROOT, env=environment)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("first 2 meta-step(s): identical (2 metrics line(s) compared)")
    bad = subprocess.run([sys.executable, "-m", "fewshot_acdc.runs.reproduce", str(recorded), "--steps", "0"],
                         capture_output=True, text=True, cwd=ROOT, env=environment)
    assert bad.returncode == 1 and "--steps must be >= 1" in bad.stderr and "Traceback" not in bad.stderr
