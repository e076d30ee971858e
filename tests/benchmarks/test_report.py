"""Specification of benchmarks/report.py: docs/performance.md is generated from the saved JSON."""
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "report.py"
spec = importlib.util.spec_from_file_location("performance_report", SCRIPT)
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


@pytest.mark.docs
def test_the_committed_performance_page_is_what_the_saved_results_generate(tmp_path):
    generated = tmp_path / "performance.md"
    report.main(["--out", str(generated)])
    committed = report.ROOT / "docs" / "performance.md"
    assert generated.read_text() == committed.read_text(), "run python benchmarks/report.py"


def test_a_section_names_the_commit_it_measured_and_says_when_the_code_had_changed():
    assert report.source_text({}) == ""
    assert report.source_text({"source": {"git_commit": None}}) == ""
    clean = {"source": {"git_commit": "0123456789abcdef", "uncommitted_changes": False}}
    assert report.source_text(clean) == ", code at 0123456"
    changed = {"source": {"git_commit": "0123456789abcdef", "uncommitted_changes": True}}
    assert report.source_text(changed) == ", code at 0123456 with uncommitted changes"


def test_phase_section_lists_every_phase_and_the_query_pass_floor():
    rows = [{"backbone": "resnet18", "conv": "acdc-net", "scope": "query-pass", "order": "-", "image_size": 84,
             "query_pass": 1.0, "total": 1.0},
            {"backbone": "resnet18", "conv": "acdc-net", "scope": "all", "order": "second", "image_size": 84,
             "inner": 0.5, "query_forward": 0.5, "backward": 3.0, "total": 4.0}]
    floor = [{"backbone": "resnet18", "conv": "acdc-net", "order": "second", "floor_share": 0.25,
              "atoms_vs_all": 0.85, "atoms_part_ratio": 0.8, "atoms_part_needed": 0.667}]
    settings = {"ways": 5, "shots": 1, "queries": 15, "inner_steps": 5, "inner_lr": 0.01, "repeats": 3}
    lines = report.phases_section({"command": "python benchmarks/maml_phases.py", "settings": settings,
                                   "rows": rows, "floor": floor})
    assert "| resnet18 | 84 | acdc-net | all | second | 0.50 | 0.50 | 3.00 | 4.00 |  |" in lines
    assert "| resnet18 | 84 | acdc-net | query-pass | - |  |  |  | 1.00 | 1.00 |" in lines
    assert "| resnet18 | acdc-net | second | 0.25 | 0.85 | 0.80 | 0.67 |" in lines


def test_source_trees_section_lists_each_checkout_and_its_ratio_to_the_first():
    rows = [{"backbone": "resnet18", "image_size": 84, "conv": "acdc-net", "scope": "all", "order": "second",
             "implementation": "engine", "source": source, "seconds_per_step": seconds, "added_memory_mb": memory}
            for source, seconds, memory in (("before", 3.0, 400.0), ("after", 2.7, 410.0))]
    saved = {"command": "python benchmarks/maml_step.py --source-trees before=../b,after=.", "settings": {"rounds": 2},
             "source_trees": [{"label": "before", "git_commit": "48ef6380000"}, {"label": "after", "git_commit": "e552b93000"}],
             "rows": rows, "source_ratios": [{"source": "after / before", "backbone": "resnet18", "image_size": 84,
                                              "conv": "acdc-net", "scope": "all", "order": "second",
                                              "time_ratio": 0.9, "memory_ratio": 1.025}]}
    text = "\n".join(report.source_trees_section("Before and after", saved))
    assert "`before` = 48ef638, `after` = e552b93" in text
    assert "| resnet18 | 84 | acdc-net | all | second | before | 3.00 | 400 |" in text
    assert "| after / before | resnet18 | 84 | acdc-net | all | second | 0.900 | 1.025 |" in text


def test_recompute_section_puts_the_three_orders_side_by_side_and_names_what_was_not_run():
    def row(order, steps, seconds=None, memory=None, **extra):
        measured = {"seconds_per_step": seconds, "added_memory_mb": memory} if seconds is not None else {}
        return {"backbone": "resnet34", "image_size": 224, "conv": "acdc-net", "scope": "all", "order": order,
                "inner_steps": steps, "implementation": "engine", **measured, **extra}
    settings = {"shots": 1, "queries": 1, "meta_batch": 1, "threads": 1, "warmup": 0, "repeats": 1, "rounds": 1,
                "memory_cap_mb": 6144, "cpu_memory": "live"}
    rows = [row("second", 5, 26.4, 2407), row("second-recompute", 5, 29.1, 665), row("first", 5, 7.7, 254),
            row("second", 10, error="not run: predicted peak 6300 MB ...", skipped=True),
            row("second-recompute", 10, 60.0, 800), row("first", 10, 15.0, 260)]
    ratios = [{"comparison": "recomputed vs second order", "backbone": "resnet34", "image_size": 224,
               "inner_steps": 5, "time_ratio": 1.10, "memory_ratio": 0.28, "time_limit": 1.5, "time_met": True,
               "memory_limit": 0.5, "memory_met": True},
              {"comparison": "acdc-net vs standard", "backbone": "resnet34", "image_size": 224, "inner_steps": 5,
               "time_ratio": 1.0}]
    text = "\n".join(report.recompute_section({"command": "python benchmarks/maml_step.py ...", "settings": settings,
                                               "rows": rows, "ratios": ratios}))
    assert "| resnet34 | 224 | acdc-net | all | 5 | 26.40 | 2407 | 29.10 | 665 | 7.70 | 254 |" in text
    assert "| resnet34 | 224 | acdc-net | all | 10 | not run [1] |  | 60.00 | 800 | 15.00 | 260 |" in text
    assert "[1] resnet34 224 px 10 steps, second: not run: predicted peak 6300 MB ..." in text
    assert ("| recomputed vs second order | resnet34 | 224 | 5 | 1.10 | 0.28 | time <= 1.50: met; "
            "memory <= 0.50: met |") in text
    assert "acdc-net vs standard" not in text and "at most 6144 MB" in text


def test_split_evaluation_section_puts_the_three_ways_side_by_side():
    saved = {"command": "python benchmarks/evaluation.py --processes 2", "threads": 1,
             "settings": {"queries": 15, "inner_steps_eval": 5, "image_size": 84, "episodes": 8},
             "rows": [{"backbone": "conv4", "conv": "standard", "shots": 1, "evaluation_episodes_per_second": 0.5,
                       "batched": [{"eval_batch": 4, "episodes_per_second": 0.35, "over_sequential": 0.7}],
                       "processes": [{"world_size": 2, "episodes_per_second": 0.95, "over_sequential": 1.9,
                                      "max_accuracy_difference": 0.0}]}]}
    text = "\n".join(report.split_evaluation_section(saved))
    assert "| conv4 | standard | 1 | 0.50 | 0.35 (4) | 0.70x | 2 | 0.95 | 1.90x | 0 |" in text
