"""Specification of benchmarks/maml_phases.py: a meta-step split into phases, and the query-pass floor."""
import argparse
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "maml_phases.py"
spec = importlib.util.spec_from_file_location("maml_phases_benchmark", SCRIPT)
maml_phases = importlib.util.module_from_spec(spec)
spec.loader.exec_module(maml_phases)


def test_floor_summary_splits_a_step_into_the_query_pass_and_the_rest():
    rows = [
        {"backbone": "resnet18", "conv": "acdc-net", "scope": "query-pass", "order": "-", "query_pass": 1.0},
        {"backbone": "resnet18", "conv": "acdc-net", "scope": "all", "order": "second", "total": 4.0},
        {"backbone": "resnet18", "conv": "acdc-net", "scope": "atoms", "order": "second", "total": 3.4},
        {"backbone": "resnet18", "conv": "standard", "scope": "query-pass", "order": "-", "query_pass": 1.0},
        {"backbone": "resnet18", "conv": "standard", "scope": "all", "order": "second", "total": 4.2},
    ]
    (summary,) = maml_phases.floor_summary(rows)  # a standard conv has no atoms scope to compare
    assert summary["conv"] == "acdc-net" and summary["order"] == "second"
    assert summary["floor_share"] == pytest.approx(0.25)
    assert summary["atoms_vs_all"] == pytest.approx(0.85)
    assert summary["atoms_part_ratio"] == pytest.approx(2.4 / 3.0)  # (3.4 - 1) / (4 - 1)
    assert summary["atoms_part_needed"] == pytest.approx(2.0 / 3.0)  # 0.75 * 4 = 3 = 1 + 2


def test_each_configuration_gets_its_phases_and_one_query_pass_per_model():
    args = argparse.Namespace(ways=2, shots=1, queries=1, image_size=16, inner_steps=1, inner_lr=0.01, repeats=1)
    rows = maml_phases.measure_backbone("resnet10", "acdc-net", ["all", "atoms"], ["first"], args)
    by_scope = {row["scope"]: row for row in rows}
    assert set(by_scope) == {"query-pass", "all", "atoms"}
    for scope in ("all", "atoms"):
        row = by_scope[scope]
        assert all(row[phase] > 0 for phase in maml_phases.PHASES)
        assert row["total"] == pytest.approx(sum(row[phase] for phase in maml_phases.PHASES))
    assert by_scope["query-pass"]["total"] == by_scope["query-pass"]["query_pass"] > 0
