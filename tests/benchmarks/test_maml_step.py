"""Specification of benchmarks/maml_step.py's bookkeeping: rounds, medians and target ratios.

The timing itself is not tested (no wall-clock assertions); what is tested is that the numbers
the docs report are derived correctly from the measured rows.
"""
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "maml_step.py"
spec = importlib.util.spec_from_file_location("maml_step_benchmark", SCRIPT)
maml_step = importlib.util.module_from_spec(spec)
spec.loader.exec_module(maml_step)


def row(conv, scope, implementation, seconds, memory, order="second", backbone="resnet18", size=84, **fields):
    return {"backbone": backbone, "conv": conv, "scope": scope, "order": order, "image_size": size,
            "implementation": implementation, "seconds_per_step": seconds, "added_memory_mb": memory,
            "peak_memory_mb": memory + 500, "baseline_rss_mb": 500.0, "parameters": 1, **fields}


def test_rounds_are_aggregated_by_median_and_failures_are_kept_as_errors():
    rounds = [
        [row("standard", "all", "engine", 10.0, 100.0), {**row("acdc-net", "all", "engine", 0, 0), "error": "timed out"}],
        [row("standard", "all", "engine", 14.0, 120.0), {**row("acdc-net", "all", "engine", 0, 0), "error": "timed out"}],
        [row("standard", "all", "engine", 11.0, 110.0), {**row("acdc-net", "all", "engine", 0, 0), "error": "timed out"}],
    ]
    for round_rows in rounds:  # a failed run has no measurements
        for entry in round_rows:
            if "error" in entry:
                for field in ("seconds_per_step", "added_memory_mb", "peak_memory_mb", "baseline_rss_mb", "parameters"):
                    entry.pop(field)
    standard, acdc = maml_step.aggregate(rounds)
    assert standard["seconds_per_step"] == 11.0 and standard["added_memory_mb"] == 110.0
    assert standard["seconds_by_round"] == [10.0, 14.0, 11.0]
    assert acdc["error"] == "timed out" and "seconds_per_step" not in acdc


def test_ratios_pair_rows_that_differ_only_in_the_compared_field():
    rows = [
        row("standard", "all", "engine", 10.0, 200.0),
        row("acdc-net", "all", "engine", 8.0, 150.0),
        row("acdc-net", "atoms", "engine", 7.0, 90.0),
        row("acdc-net", "all", "learn2learn", 12.0, 150.0),
        row("acdc-net", "all", "engine", 99.0, 999.0, order="first"),  # other order: never paired with second
        row("standard", "all", "engine", 11.0, 1.0, order="first"),
    ]
    ratios = {(r["comparison"], r["scope"], r["order"]): r for r in maml_step.compute_ratios(rows)}
    versus_standard = ratios[("acdc-net vs standard", "all / all", "second")]
    assert versus_standard["time_ratio"] == pytest.approx(0.8)
    assert versus_standard["memory_ratio"] == pytest.approx(0.75)
    assert versus_standard["time_met"] and versus_standard["memory_met"]
    assert ratios[("acdc-net vs standard", "all / all", "first")]["time_ratio"] == pytest.approx(9.0)
    assert not ratios[("acdc-net vs standard", "all / all", "first")]["time_met"]
    atoms = ratios[("atoms vs all", "atoms / all", "second")]
    assert atoms["time_ratio"] == pytest.approx(7 / 8) and not atoms["time_met"]  # limit 0.75
    assert atoms["memory_ratio"] == pytest.approx(0.6) and atoms["memory_met"]     # limit 0.7
    engine = ratios[("engine vs learn2learn", "all", "second")]
    assert engine["time_ratio"] == pytest.approx(8 / 12) and engine["time_met"]   # 1.5x faster >= 1.3x
    assert ("engine vs higher", "all", "second") not in ratios  # no higher row measured


def test_cpu_live_memory_comes_from_a_second_run_with_malloc_returning_freed_blocks(monkeypatch):
    """Times from the default allocator, memory from the run whose RSS follows live tensors;
    the default allocator's peak is kept beside it."""
    calls = []

    def fake_worker_process(config, timeout, environment=None):
        calls.append((config.get("measure"), environment))
        if config.get("measure") == "memory":
            return {"seconds_per_step": 4.5, "added_memory_mb": 700.0, "peak_memory_mb": 1200.0,
                    "baseline_rss_mb": 500.0, "parameters": 1}
        return {"seconds_per_step": 3.0, "added_memory_mb": 950.0, "peak_memory_mb": 1450.0,
                "baseline_rss_mb": 500.0, "parameters": 1}

    monkeypatch.setattr(maml_step, "run_worker_process", fake_worker_process)
    config = {"device": "cpu", "cpu_memory": "live"}
    result = maml_step.run_configuration(config, timeout=10)
    assert result["seconds_per_step"] == 3.0
    assert result["added_memory_mb"] == 700.0 and result["rss_added_memory_mb"] == 950.0
    assert calls[0] == (None, None)
    assert calls[1][0] == "memory" and calls[1][1]["MALLOC_MMAP_THRESHOLD_"] == "65536"

    calls.clear()
    result = maml_step.run_configuration({**config, "cpu_memory": "rss"}, timeout=10)
    assert result["added_memory_mb"] == 950.0 and "rss_added_memory_mb" not in result and len(calls) == 1


def test_a_failed_memory_run_fails_the_configuration(monkeypatch):
    def fake_worker_process(config, timeout, environment=None):
        if config.get("measure") == "memory":
            return {"error": "exit -9: killed"}
        return {"seconds_per_step": 3.0, "added_memory_mb": 950.0, "peak_memory_mb": 1450.0,
                "baseline_rss_mb": 500.0, "parameters": 1}

    monkeypatch.setattr(maml_step, "run_worker_process", fake_worker_process)
    result = maml_step.run_configuration({"device": "cpu", "cpu_memory": "live"}, timeout=10)
    assert result == {"error": "memory run: exit -9: killed"}


def test_each_source_tree_is_its_own_row_and_ratios_divide_by_the_first():
    before = [{**row("acdc-net", "all", "engine", 10.0, 200.0), "source": "before"},
              {**row("standard", "all", "engine", 12.0, 300.0), "source": "before"}]
    after = [{**row("acdc-net", "all", "engine", 9.0, 220.0), "source": "after"},
             {**row("standard", "all", "engine", 12.0, 300.0), "source": "after"}]
    rows = maml_step.aggregate([before + after, before + after])
    assert [(r["conv"], r["source"]) for r in rows] == [("acdc-net", "before"), ("standard", "before"),
                                                       ("acdc-net", "after"), ("standard", "after")]
    ratios = {r["conv"]: r for r in maml_step.compute_source_ratios(rows)}
    assert ratios["acdc-net"]["source"] == "after / before"
    assert ratios["acdc-net"]["time_ratio"] == pytest.approx(0.9)
    assert ratios["acdc-net"]["memory_ratio"] == pytest.approx(1.1)
    assert ratios["standard"]["time_ratio"] == pytest.approx(1.0)
    # the issue-7 ratios pair rows of one checkout only
    versus_standard = [r for r in maml_step.compute_ratios(rows) if r["comparison"] == "acdc-net vs standard"]
    assert sorted((r["source"], r["time_ratio"]) for r in versus_standard) == [("after", 0.75), ("before", pytest.approx(10 / 12))]
    assert maml_step.compute_source_ratios([row("standard", "all", "engine", 1.0, 1.0)]) == []


def test_source_trees_must_be_labelled_checkouts(tmp_path):
    root = Path(maml_step.ROOT)
    trees = maml_step.parse_source_trees(f"before={root},after={root}")
    assert [(t["label"], t["path"]) for t in trees] == [("before", str(root)), ("after", str(root))]
    for text, message in [(f"{root}", "is not LABEL=PATH"), (f"a={tmp_path}", "holds no fewshot_acdc package"),
                          (f"a={root},a={root}", "label 'a' is given twice")]:
        with pytest.raises(SystemExit, match=message):
            maml_step.parse_source_trees(text)


def test_a_worker_times_the_package_of_its_source_tree(tmp_path):
    """The worker imports fewshot_acdc from the checkout it is given, not from this one."""
    root = Path(maml_step.ROOT)
    shutil.copytree(root / "fewshot_acdc", tmp_path / "fewshot_acdc", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "benchmarks", tmp_path / "benchmarks", ignore=shutil.ignore_patterns("__pycache__", "results"))
    config = {"backbone": "conv4", "conv": "acdc-net", "scope": "all", "order": "first", "image_size": 16,
              "implementation": "engine", "ways": 2, "shots": 1, "queries": 1, "meta_batch": 1, "inner_steps": 1,
              "inner_lr": 0.01, "task_batching": "sequential", "repeats": 1, "device": "cpu", "threads": 1,
              "source": "copy", "source_path": str(tmp_path)}
    result = maml_step.run_worker_process(config, timeout=120)
    assert result["package"] == str(tmp_path) and result["seconds_per_step"] > 0
    config.pop("source_path")
    assert maml_step.run_worker_process(config, timeout=120)["package"] == str(root)


def test_recomputed_steps_are_compared_with_plain_second_order_at_the_same_image_size_and_steps():
    rows = [row("acdc-net", "all", "engine", seconds, memory, order=order, size=224, inner_steps=steps)
            for steps, order, seconds, memory in ((5, "second", 20.0, 3000.0), (5, "second-recompute", 28.0, 1200.0),
                                                  (5, "first", 8.0, 900.0), (10, "second", 40.0, 6000.0),
                                                  (10, "second-recompute", 70.0, 1500.0))]
    ratios = {(r["comparison"], r["inner_steps"]): r for r in maml_step.compute_ratios(rows)}
    five = ratios[("recomputed vs second order", 5)]
    assert five["order"] == "second-recompute / second" and five["image_size"] == 224
    assert five["time_ratio"] == pytest.approx(1.4) and five["time_met"]        # limit 1.5
    assert five["memory_ratio"] == pytest.approx(0.4) and five["memory_met"]    # limit 0.5
    ten = ratios[("recomputed vs second order", 10)]
    assert ten["time_ratio"] == pytest.approx(1.75) and not ten["time_met"]     # never paired across steps
    assert ratios[("first vs second order", 5)]["memory_ratio"] == pytest.approx(0.3)
    assert ("first vs second order", 10) not in ratios


def test_a_configuration_is_predicted_from_its_run_with_fewer_inner_steps():
    measured = [row("acdc-net", "all", "engine", 20.0, 2600.0, size=224, inner_steps=5, source=""),
                row("acdc-net", "all", "engine", 9.0, 800.0, size=84, inner_steps=5, source="")]
    config = {**row("acdc-net", "all", "engine", 0, 0, size=224, inner_steps=10, source="")}
    prediction = maml_step.predicted_peak_mb(config, measured)
    assert prediction == {"peak_mb": 500.0 + 5200.0, "from_steps": 5, "from_added_mb": 2600.0}
    assert maml_step.predicted_peak_mb({**config, "order": "first"}, measured) is None
    assert maml_step.predicted_peak_mb({**config, "inner_steps": 5}, measured) is None


def test_the_memory_cap_limits_a_workers_data_segment():
    shown = subprocess.run([sys.executable, "-c", "import resource; print(resource.getrlimit(resource.RLIMIT_DATA))"],
                           capture_output=True, text=True, preexec_fn=maml_step.memory_limit(100), check=True)
    assert shown.stdout.strip() == f"({100 * 2**20}, {100 * 2**20})"
    assert maml_step.memory_limit(0) is None


def test_a_worker_stopped_by_the_cap_is_recorded_as_over_it(monkeypatch):
    def out_of_memory(command, **options):
        assert options["preexec_fn"] is not None
        return subprocess.CompletedProcess(command, 1, stdout="", stderr="RuntimeError: [enforce fail at "
                                           "alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")
    monkeypatch.setattr(maml_step.subprocess, "run", out_of_memory)
    result = maml_step.run_worker_process({"device": "cpu", "memory_cap_mb": 6144}, timeout=10)
    assert result == {"error": "over the memory cap of 6144 MB (an allocation failed under RLIMIT_DATA)",
                      "skipped": True}
