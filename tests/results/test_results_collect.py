"""Spec: reading run directories (docs/run_directory.md) into RunRecords.

Every run directory found becomes a record with a status; whatever is wrong with a run is a
reason in ``problems`` (or, if harmless, ``warnings``) - reading never raises.

- statuses: ok, no-evaluation, unfinished, failed, corrupt, unidentified, missing;
- mean and CI are recomputed from per_episode_accuracy; stored values that disagree are
  flagged; unknown keys are tolerated;
- run directories are found below parent directories (any directory with config.yaml or
  summary.json), never inside a run.
"""

import json
import math

import numpy as np
import pytest
import yaml

from fewshot_acdc.results import collect_runs, discover_runs, load_run


def one(records, name):
    [r] = [r for r in records if r.name.endswith(name)]
    return r


# ---- discovery ---------------------------------------------------------------------------


def test_runs_are_discovered_below_parents_but_not_inside_runs(make_run, tmp_path):
    make_run("sweep/a", evals={"test_5way_1shot.json": [0.5, 0.6]})
    make_run("sweep/nested/b", evals={"test_5way_1shot.json": [0.5, 0.6]})
    (tmp_path / "runs" / "sweep" / "empty-dir").mkdir()
    found = discover_runs(tmp_path / "runs")
    assert [p.relative_to(tmp_path / "runs").as_posix() for p in found] == [
        "sweep/a", "sweep/nested/b"
    ]
    # a run dir given directly is the run itself, not a parent
    assert discover_runs(tmp_path / "runs" / "sweep" / "a") == [tmp_path / "runs" / "sweep" / "a"]


def test_run_reached_twice_is_loaded_once_and_names_are_relative(make_run, tmp_path):
    run = make_run("a", evals={"test_5way_1shot.json": [0.5]})
    records = collect_runs([tmp_path / "runs", run])
    assert [r.name for r in records] == ["runs/a"]
    assert [r.name for r in collect_runs([run])] == ["a"]
    assert collect_runs(str(run))[0].path == str(run.resolve())  # one path, not a list


def test_missing_path_and_empty_parent_are_listed(tmp_path):
    (tmp_path / "empty").mkdir()
    records = collect_runs([tmp_path / "nope", tmp_path / "empty"])
    assert [r.status for r in records] == ["missing", "missing"]
    assert "does not exist" in records[0].problems[0]
    assert "no run directory" in records[1].problems[0]


# ---- a good run --------------------------------------------------------------------------


def test_finished_run_with_evaluation(make_run):
    accs = [0.52, 0.44, 0.6, 0.48, 0.5333333333333333]
    run = make_run(
        "r18-acdc", conv="acdc-net", size=8, shots=1,
        evals={"test_5way_1shot.json": accs},
    )
    rec = load_run(run)
    assert rec.status == "ok" and rec.problems == [] and rec.warnings == []
    i = rec.identity
    assert (i.dataset, i.backbone, i.conv, i.size, i.adapt, i.first_order, i.ways, i.shots) == (
        "miniimagenet", "resnet18", "acdc-net", 8, "all", False, 5, 1
    )
    assert (rec.total_parameters, rec.adapted_parameters) == (11_200_000, 11_200_000)
    assert (rec.seconds_per_meta_step, rec.peak_memory_mb) == (1.25, 2150.3)
    e = rec.get_eval("test", 5, 1)
    assert e.file == "eval/test_5way_1shot.json"
    assert e.episodes == 5
    assert e.mean == pytest.approx(np.mean(accs))
    assert e.ci95 == pytest.approx(1.96 * np.std(accs) / math.sqrt(5))
    assert e.episode_set == "miniimagenet-test-5w1s15q-seed0"
    assert (e.queries, e.inner_steps_eval, e.checkpoint) == (15, 10, "best")


def test_run_directories_written_before_each_kind_named_its_size_still_read(make_run):
    # Older files: config.yaml names the kind by `acdc` and sizes every kind by `atoms`, standard
    # ones included; summary.json has `atoms` instead of `size`.
    old = {"basis-old": ("basis", {"acdc": "none", "conv": "basis"}), "net-old": ("acdc-net", {"acdc": "net"}),
           "std-old": ("standard", {"acdc": "none"})}
    for name, (conv, config) in old.items():
        run = make_run(name, conv=conv, evals={"test_5way_1shot.json": [0.5]})
        summary = json.loads((run / "summary.json").read_text())
        summary.pop("size")
        summary["atoms"] = 16
        (run / "summary.json").write_text(json.dumps(summary))
        (run / "config.yaml").write_text(yaml.safe_dump({"backbone": "resnet18", "adapt": "all", "atoms": 16, **config}))
        rec = load_run(run)
        assert rec.status == "ok" and rec.warnings == [], rec.warnings
        assert (rec.identity.conv, rec.identity.size) == (conv, None if conv == "standard" else 16)
        (run / "summary.json").unlink()  # the config alone: as an unfinished run reads it
        assert load_run(run).identity.size == (None if conv == "standard" else 16)


def test_the_size_of_a_kind_is_read_under_its_own_config_key(make_run):
    run = make_run("dcf", conv="dcf", size=6, status=None)
    assert "bessel_atoms: 6" in (run / "config.yaml").read_text()
    assert (load_run(run).identity.conv, load_run(run).identity.size) == ("dcf", 6)


def test_unknown_keys_are_tolerated(make_run, eval_payload):
    payload = eval_payload([0.5, 0.7], shots=1)
    payload["something_new"] = {"nested": [1, 2]}
    run = make_run("extra", evals={"test_5way_1shot.json": payload},
                   summary_extra={"git_commit": "abc123", "notes": None})
    rec = load_run(run)
    assert rec.status == "ok" and rec.problems == [] and rec.warnings == []


def test_identity_falls_back_to_config_yaml_and_disagreement_is_flagged(make_run):
    run = make_run("r", conv="acdc-net", evals={"test_5way_1shot.json": [0.5]})
    summary = json.loads((run / "summary.json").read_text())
    del summary["backbone"]
    summary["conv"] = "standard"
    (run / "summary.json").write_text(json.dumps(summary))
    rec = load_run(run)
    assert rec.identity.backbone == "resnet18"  # from config.yaml
    assert rec.identity.conv == "standard"  # summary.json wins ...
    assert any("conv" in w and "config.yaml" in w for w in rec.warnings)  # ... loudly


# ---- stored statistics -------------------------------------------------------------------


def test_stored_mean_ci_and_episode_count_that_disagree_are_flagged(make_run, eval_payload):
    accs = [0.4, 0.6, 0.5, 0.7]
    payload = eval_payload(accs, stored_mean=0.70, stored_ci95=0.001, episodes=600)
    rec = load_run(make_run("r", evals={"test_5way_1shot.json": payload}))
    e = rec.get_eval("test", 5, 1)
    assert e.mean == pytest.approx(0.55) and e.episodes == 4  # recomputed values are used
    text = " ".join(e.warnings)
    assert "stored mean_accuracy 0.7000" in text and "0.5500" in text
    assert "stored ci95 0.0010" in text
    assert "episodes=600" in text
    assert rec.status == "ok" and e.warnings == [w for w in rec.warnings if w in e.warnings]


def test_rounded_stored_values_are_not_flagged(make_run, eval_payload):
    accs = [0.4, 0.6, 0.5, 0.7]
    payload = eval_payload(accs, stored_mean=0.550, stored_ci95=round(1.96 * np.std(accs) / 2, 3))
    rec = load_run(make_run("r", evals={"test_5way_1shot.json": payload}))
    assert rec.warnings == []


# ---- unfinished, failed, corrupt, unevaluated --------------------------------------------


def test_unfinished_run_reports_progress(make_run):
    run = make_run("r", status=None, metrics=[{"iteration": 500}, {"iteration": 1500}])
    rec = load_run(run)
    assert rec.status == "unfinished"
    assert rec.problems == [
        "unfinished: no summary.json (training has not finished; last logged iteration 1500 "
        "of 60000)"
    ]
    assert rec.identity.backbone == "resnet18"  # still identified from config.yaml
    assert rec.identity.conv == "standard"  # TrainConfig's `acdc: none`


def test_unfinished_run_with_torn_metrics_line(make_run):
    run = make_run("r", status=None, metrics=[{"iteration": 500}])
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"iteration": 10')  # killed mid-write
    rec = load_run(run)
    assert "last logged iteration 500" in rec.problems[0]
    assert "metrics.jsonl: 1 unreadable line(s) skipped" in rec.warnings


def test_failed_run_reports_the_error(make_run):
    # training writes only {"status": "failed", "error": ..., "iteration": ...}
    rec = load_run(make_run("r", conv="acdc-net", status="failed", error="CUDA out of memory"))
    assert rec.status == "failed"
    assert rec.problems == [
        "failed: training stopped at iteration 1234 with an error: CUDA out of memory"
    ]
    # identity from config.yaml (a failed run's summary holds no identity)
    assert (rec.identity.backbone, rec.identity.conv, rec.identity.size) == ("resnet18", "acdc-net", 8)


def test_corrupt_summary_names_the_file_and_the_parse_error(make_run):
    run = make_run("r", evals={"test_5way_1shot.json": [0.5]})
    (run / "summary.json").write_text('{"status": "finished",', encoding="utf-8")
    try:
        json.loads('{"status": "finished",')
    except json.JSONDecodeError as e:
        parse_error = str(e)
    rec = load_run(run)
    assert rec.status == "corrupt"
    assert rec.problems == [f"corrupt: summary.json: invalid JSON ({parse_error})"]


def test_summary_that_is_not_an_object_is_corrupt(make_run):
    run = make_run("r")
    (run / "summary.json").write_text("[1, 2]")
    assert load_run(run).problems == ["corrupt: summary.json: expected a JSON object, got list"]


def test_corrupt_eval_file_is_named_and_other_evaluations_still_count(make_run):
    run = make_run("r", evals={
        "test_5way_1shot.json": [0.5, 0.6],
        "test_5way_5shot.json": '{"per_episode_accuracy": [0.5, ',
    })
    rec = load_run(run)
    assert rec.status == "ok"
    assert list(rec.evals) == [("test", 5, 1)]
    [problem] = rec.problems
    assert problem.startswith("eval/test_5way_5shot.json: corrupt: invalid JSON (")


def test_finished_run_without_evaluation(make_run):
    rec = load_run(make_run("r"))
    assert (rec.status, rec.problems) == ("no-evaluation", ["no evaluation: eval/ directory missing"])


def test_finished_run_whose_only_evaluation_is_corrupt(make_run):
    rec = load_run(make_run("r", evals={"test_5way_1shot.json": "not json"}))
    assert rec.status == "no-evaluation"
    assert rec.problems[0].startswith("eval/test_5way_1shot.json: corrupt: invalid JSON")
    assert rec.problems[1] == "no evaluation: no readable evaluation file"


@pytest.mark.parametrize(
    "accs, reason",
    [
        ([], "per_episode_accuracy is empty"),
        ([0.5, 1.5], "per_episode_accuracy [1] = 1.5 is outside [0, 1]"),
        ([0.5, "x"], "per_episode_accuracy [1] = 'x' is not a number"),
        ({"a": 1}, "per_episode_accuracy is not a list (dict)"),
        (None, "no per_episode_accuracy, so no CI can be computed"),
    ],
)
def test_invalid_per_episode_accuracies_make_the_file_unusable(make_run, eval_payload, accs, reason):
    payload = eval_payload([0.5], shots=1)
    if accs is None:
        del payload["per_episode_accuracy"]
    else:
        payload["per_episode_accuracy"] = accs
    rec = load_run(make_run("r", evals={"test_5way_1shot.json": payload}))
    assert rec.status == "no-evaluation"
    assert rec.problems[0].startswith(f"eval/test_5way_1shot.json: {reason}")


def test_eval_file_whose_content_contradicts_its_name_is_ignored(make_run, eval_payload):
    rec = load_run(make_run("r", evals={"test_5way_1shot.json": eval_payload([0.5], shots=5)}))
    assert rec.evals == {}
    assert "file name says shots=1 but the file says 5" in rec.problems[0]


def test_unrecognised_files_in_eval_are_ignored_with_a_warning(make_run):
    run = make_run("r", evals={"test_5way_1shot.json": [0.5], "notes.json": "{}"})
    (run / "eval" / "readme.txt").write_text("hi")
    rec = load_run(run)
    assert rec.status == "ok"
    assert rec.warnings == ["eval/notes.json: not an <split>_<ways>way_<shots>shot.json name; ignored"]


def test_unidentifiable_finished_run(make_run):
    run = make_run("r", config=False, evals={"test_5way_1shot.json": [0.5]})
    summary = json.loads((run / "summary.json").read_text())
    del summary["adapt"]
    (run / "summary.json").write_text(json.dumps(summary))
    rec = load_run(run)
    assert rec.status == "unidentified"
    assert rec.problems == ["cannot identify the run: no adapt in summary.json or config.yaml"]
    assert "config.yaml missing" in rec.warnings


def test_bad_summary_numbers_are_dropped_with_a_warning(make_run):
    rec = load_run(make_run("r", total_parameters="many", evals={"test_5way_1shot.json": [0.5]}))
    assert rec.total_parameters is None
    assert "summary.json: total_parameters is not an integer ('many'); ignored" in rec.warnings
    assert "summary.json has no total_parameters" not in rec.warnings  # said once, as what it is


def test_omniglot_all_runs_file(make_run):
    run = make_run("omni", dataset="omniglot", evals={"test_5way_1shot.json": [0.9]})
    per_run = [0.1, 0.15, 0.05, 0.2]
    (run / "eval" / "omniglot-all-runs.json").write_text(json.dumps({
        "benchmark": "omniglot-all-runs", "runs": 4, "error_rate": 0.125,
        "per_run_error_rate": per_run, "inner_steps_eval": 10, "checkpoint": "best",
    }))
    rec = load_run(run)
    assert rec.omniglot.error_rate == pytest.approx(0.125)
    assert rec.omniglot.per_run_error_rate == per_run
    assert rec.warnings == []


def test_config_yaml_with_python_tags_still_loads(make_run):
    run = make_run("r", status=None)
    (run / "config.yaml").write_text(
        "backbone: resnet34\nconv: acdc-net\natoms: 4\nadapt: atoms\nshots: 5\n"
        "data_root: !!python/object/apply:pathlib.PosixPath [/data, mini]\n"
        "crop: !!python/tuple [84, 84]\n"
    )
    rec = load_run(run)
    i = rec.identity
    assert (i.backbone, i.conv, i.size, i.adapt, i.shots) == ("resnet34", "acdc-net", 4, "atoms", 5)
    assert rec.config["crop"] == [84, 84] and rec.warnings == []


def test_corrupt_config_yaml_is_a_warning_when_summary_json_identifies_the_run(make_run):
    run = make_run("r", evals={"test_5way_1shot.json": [0.5]})
    (run / "config.yaml").write_text("backbone: [resnet18\n")
    rec = load_run(run)
    assert rec.status == "ok" and rec.identity.backbone == "resnet18"
    assert rec.warnings[0].startswith("config.yaml: invalid YAML (")
