"""Specification of experiments/inner_lr_probe.py: what one row of the probe measures.

The probe picks the grid's inner step sizes, so its numbers must be the losses and accuracies of
the adapted parameters on the episode's own support and query sets.
"""
import importlib.util
import json
import math
from pathlib import Path

import pytest

from fewshot_acdc.config import load_config

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "inner_lr_probe.py"
spec = importlib.util.spec_from_file_location("inner_lr_probe", SCRIPT)
inner_lr_probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(inner_lr_probe)


@pytest.fixture
def config(tmp_path):
    return load_config(None, {
        "dataset": "builtin", "backbone": "conv4", "conv": "acdc-net", "atoms": 4, "adapt": "atoms",
        "image_size": 20, "ways": 3, "shots": 1, "queries": 2, "device": "cpu",
        "episode_dir": str(tmp_path / "episodes"),
    })


def test_a_vanishing_step_changes_nothing_and_a_real_step_lowers_the_support_loss(config):
    # (a step size of 0 is refused by the config, so "no step" is one of 1e-12)
    zero, small = inner_lr_probe.probe(config, [{"atoms": 1e-12}, {"atoms": 0.05}], episodes=3, steps=2)
    assert zero["steps"] == 2 and zero["inner_lr"] == {"atoms": 1e-12}
    assert zero["support_loss_after"] == pytest.approx(zero["support_loss_before"])
    assert zero["query_loss_after"] == pytest.approx(zero["query_loss_before"])
    assert zero["query_accuracy_after"] == pytest.approx(zero["query_accuracy_before"])
    assert zero["ratio"] == pytest.approx(1.0)
    # every candidate starts from the same initialisation on the same episodes
    assert small["support_loss_before"] == pytest.approx(zero["support_loss_before"])
    assert small["query_loss_before"] == pytest.approx(zero["query_loss_before"])
    assert small["support_loss_after"] < small["support_loss_before"]
    assert small["ratio"] == pytest.approx(small["support_loss_after"] / small["support_loss_before"])
    for value in small.values():
        assert not isinstance(value, float) or math.isfinite(value)
    assert 0.0 <= small["query_accuracy_after"] <= 1.0


def test_main_writes_a_record_naming_steps_commit_and_machine(tmp_path, capsys):
    out = tmp_path / "probe.json"
    code = inner_lr_probe.main([
        "--config", str(SCRIPT.parents[1] / "configs" / "quick_builtin.yaml"),
        "--set", "image_size=20", "--set", f"episode_dir={tmp_path / 'episodes'}", "--set", "device=cpu",
        "--lr", "0.01", "--episodes", "2", "--steps", "3", "--out", str(out)])
    assert code == 0
    record = json.loads(out.read_text())
    assert record["steps"] == 3 and len(record["rows"]) == 1
    assert {"source", "machine", "created"} <= set(record)
    assert "query loss" in capsys.readouterr().out
