"""Spec: how runs become table rows and cells.

- one row per (dataset, backbone, conv [+ atoms/group size for ACDC], adapt, first-order);
- the k-shot cell of a row comes from the run of that row *trained* k-shot and evaluated
  ``test_5way_<k>shot``; an evaluation at another shot count (cross-shot) never stands in for
  such a run, but is listed as such and fills, marked ``cross-shot``, a cell no run trained at
  that count fills;
- runs of one row and shot count that differ in a training setting (step sizes, meta-steps, ...)
  are an ablation: each setting is a row of its own, labelled by what sets it apart from the
  most common setting;
- two runs with the same settings competing for one cell are a conflict: no number is picked,
  both are reported;
- parameters come from summary.json (a disagreement is reported, not hidden); time per step
  and peak memory are per cell;
- only finished runs count unless ``include_unfinished``.
"""

import dataclasses

import numpy as np
import pytest

from fewshot_acdc.results import build_table, collect_runs


def table_of(tmp_path, **kw):
    return build_table(collect_runs([tmp_path / "runs"]), **kw)


def test_one_shot_and_five_shot_runs_merge_into_one_row(make_run, tmp_path):
    a1, a5 = [0.4, 0.5, 0.6], [0.7, 0.8]
    make_run("r18-1", shots=1, seconds_per_meta_step=1.5, peak_memory_mb=2000.0,
             evals={"test_5way_1shot.json": a1})
    make_run("r18-5", shots=5, seconds_per_meta_step=2.5, peak_memory_mb=3000.0,
             evals={"test_5way_5shot.json": a5})
    table = table_of(tmp_path)
    [row] = table.rows
    assert (row.key.backbone, row.key.conv, row.key.adapt) == ("resnet18", "standard", "all")
    c1, c5 = row.cell(1), row.cell(5)
    assert (c1.status, c1.run.name, c1.mean, c1.episodes) == ("ok", "runs/r18-1", pytest.approx(0.5), 3)
    assert c1.ci95 == pytest.approx(1.96 * np.std(a1) / np.sqrt(3))
    assert (c5.status, c5.run.name, c5.mean, c5.episodes) == ("ok", "runs/r18-5", pytest.approx(0.75), 2)
    assert (c1.seconds_per_meta_step, c5.seconds_per_meta_step) == (1.5, 2.5)
    assert (c1.peak_memory_mb, c5.peak_memory_mb) == (2000.0, 3000.0)
    assert (row.total_parameters, row.adapted_parameters) == (11_200_000, 11_200_000)
    assert table.problems == [] and table.unused == []


def test_a_cross_shot_evaluation_fills_an_empty_cell_marked_with_its_training_shots(make_run, tmp_path):
    # Issue 17: `evaluate.py --shots 1 5` on a 1-shot run showed "—" for 5-shot.
    make_run("r18-1", shots=1, seconds_per_meta_step=1.5, peak_memory_mb=2000.0,
             evals={"test_5way_1shot.json": [0.5], "test_5way_5shot.json": [0.8, 0.9]})
    table = table_of(tmp_path)
    [row] = table.rows
    assert row.cell(1).status == "ok" and row.cell(1).trained_shots == 1
    c5 = row.cell(5)
    assert (c5.status, c5.run.name, c5.trained_shots, c5.mean) == ("cross-shot", "runs/r18-1", 1, pytest.approx(0.85))
    assert any("trained 1-shot, evaluated 5-shot" in n for n in c5.notes)
    # time and memory belong to the 1-shot training, already in the 1-shot column
    assert (c5.seconds_per_meta_step, c5.peak_memory_mb) == (None, None)
    [cross] = table.cross_shot
    assert (cross.run.name, cross.trained_shots, cross.shots, cross.in_table) == ("runs/r18-1", 1, 5, True)
    assert table.unused == [] and table.problems == []


def test_a_run_trained_at_the_column_shots_wins_over_a_cross_shot_evaluation(make_run, tmp_path):
    make_run("r18-1", shots=1, evals={"test_5way_1shot.json": [0.5], "test_5way_5shot.json": [0.9]})
    make_run("r18-5", shots=5, evals={"test_5way_5shot.json": [0.7]})
    table = table_of(tmp_path)
    [row] = table.rows
    assert (row.cell(5).status, row.cell(5).run.name, row.cell(5).mean) == ("ok", "runs/r18-5", 0.7)
    [cross] = table.cross_shot  # still listed, just not in the table
    assert (cross.run.name, cross.shots, cross.in_table) == ("runs/r18-1", 5, False)
    assert table.problems == []  # two protocols, not two candidates for one


def test_several_cross_shot_evaluations_for_one_cell_fill_none(make_run, tmp_path):
    make_run("r18-1", shots=1, evals={"test_5way_1shot.json": [0.5], "test_5way_5shot.json": [0.9]})
    make_run("r18-10", shots=10, evals={"test_5way_5shot.json": [0.6]})
    table = table_of(tmp_path)
    [row] = table.rows
    c5 = row.cell(5)
    assert c5.status == "missing" and c5.run is None
    assert "2 cross-shot evaluations" in c5.notes[0] and "runs/r18-10, trained 10-shot" in c5.notes[0]
    assert [(c.run.name, c.in_table) for c in table.cross_shot] == [("runs/r18-1", False), ("runs/r18-10", False)]


def test_run_with_only_a_cross_shot_evaluation_gets_a_row_showing_it(make_run, tmp_path):
    make_run("r18-5", shots=5, evals={"test_5way_1shot.json": [0.5]})
    table = table_of(tmp_path)
    [row] = table.rows
    assert (row.cell(1).status, row.cell(1).trained_shots) == ("cross-shot", 5)
    assert row.cell(5).status == "missing" and table.unused == []


def test_run_whose_evaluations_match_no_column_is_listed_as_unused(make_run, tmp_path):
    make_run("r18-5", shots=5, evals={"test_5way_10shot.json": [0.5]})
    table = table_of(tmp_path)
    assert table.rows == []
    [(run, why)] = table.unused
    assert run.name == "runs/r18-5" and "trained 5-shot" in why and "test 5-way 10-shot" in why
    [cross] = table.cross_shot  # listed among the cross-shot evaluations all the same
    assert (cross.shots, cross.trained_shots, cross.in_table) == (10, 5, False)


def test_other_ways_and_splits_are_not_in_the_5_way_test_table(make_run, tmp_path):
    make_run("r", shots=1, evals={"test_20way_1shot.json": [0.5], "val_5way_1shot.json": [0.5]})
    table = table_of(tmp_path)
    assert table.rows == [] and len(table.unused) == 1
    assert table_of(tmp_path, split="val").rows[0].cell(1).mean == pytest.approx(0.5)
    assert table_of(tmp_path, ways=20).rows[0].cell(1).mean == pytest.approx(0.5)


def test_two_runs_for_the_same_cell_are_a_conflict_not_a_choice(make_run, tmp_path):
    make_run("seed0", shots=1, evals={"test_5way_1shot.json": [0.4, 0.6]})  # CI 1.96*0.1/sqrt(2)
    make_run("seed1", shots=1, evals={"test_5way_1shot.json": [0.7, 0.7]})
    table = table_of(tmp_path)
    [row] = table.rows
    cell = row.cell(1)
    assert cell.status == "conflict" and cell.eval is None and cell.run is None
    assert [r.name for r in cell.candidates] == ["runs/seed0", "runs/seed1"]
    [problem] = table.problems
    assert "2 runs qualify" in problem and "none is shown" in problem
    assert "runs/seed0: 50.00 ± 13.86 (2)" in problem and "runs/seed1: 70.00 ± 0.00 (2)" in problem


def test_different_atoms_or_adapt_scopes_are_different_rows(make_run, tmp_path):
    make_run("a8", conv="acdc-net", size=8, evals={"test_5way_1shot.json": [0.5]})
    make_run("a4", conv="acdc-net", size=4, evals={"test_5way_1shot.json": [0.5]})
    make_run("a8-atoms", conv="acdc-net", size=8, adapt="atoms", evals={"test_5way_1shot.json": [0.5]})
    make_run("std", conv="standard", evals={"test_5way_1shot.json": [0.5]})
    table = table_of(tmp_path)
    assert [(r.key.conv, r.key.size, r.key.adapt) for r in table.rows] == [
        ("standard", None, "all"),
        ("acdc-net", 4, "all"),
        ("acdc-net", 8, "all"),
        ("acdc-net", 8, "atoms"),
    ]
    assert table.problems == []
    assert table.find("resnet18", "acdc-net", "atoms").key.conv_label == "ACDC-net (8 atoms)"
    assert table.rows[2].key.method_label == "MAML + ACDC-net (8 atoms)"


def test_rows_are_ordered_by_backbone_depth(make_run, tmp_path):
    for b in ("resnet34", "resnet10", "conv4", "resnet18"):
        make_run(b, backbone=b, evals={"test_5way_1shot.json": [0.5]})
    assert [r.key.backbone for r in table_of(tmp_path).rows] == [
        "conv4", "resnet10", "resnet18", "resnet34"
    ]


def test_disagreeing_parameter_counts_are_reported(make_run, tmp_path):
    make_run("r1", shots=1, total_parameters=1000, evals={"test_5way_1shot.json": [0.5]})
    make_run("r5", shots=5, total_parameters=2000, evals={"test_5way_5shot.json": [0.5]})
    [row] = table_of(tmp_path).rows
    assert row.total_parameters is None
    assert row.adapted_parameters == 11_200_000
    assert row.notes == ["total_parameters differ between the runs of this row "
                         "(1-shot run: 1000, 5-shot run: 2000)"]


def test_unfinished_runs_only_fill_cells_when_asked(make_run, tmp_path):
    make_run("r", status=None, evals={"test_5way_1shot.json": [0.5, 0.6]})
    assert table_of(tmp_path).rows == []
    [row] = table_of(tmp_path, include_unfinished=True).rows
    assert row.cell(1).mean == pytest.approx(0.55)
    assert "runs/r: from an unfinished run (no summary.json)" in row.cell(1).notes


def test_failed_and_corrupt_runs_never_fill_cells(make_run, tmp_path):
    make_run("failed", status="failed", evals={"test_5way_1shot.json": [0.5]})
    run = make_run("corrupt", evals={"test_5way_1shot.json": [0.5]})
    (run / "summary.json").write_text("{")
    assert table_of(tmp_path, include_unfinished=True).rows == []


def test_stored_statistic_mismatch_is_a_cell_note(make_run, eval_payload, tmp_path):
    make_run("r", evals={"test_5way_1shot.json": eval_payload([0.4, 0.6], stored_mean=0.9)})
    [row] = table_of(tmp_path).rows
    assert row.cell(1).mean == pytest.approx(0.5)
    assert any("stored mean_accuracy 0.9000" in n for n in row.cell(1).notes)


def test_a_shared_head_run_is_its_own_row_and_old_runs_count_as_per_class(make_run, tmp_path):
    make_run("per-class", evals={"test_5way_1shot.json": [0.4, 0.5]})  # no head_init: written before it existed
    make_run("shared", summary_extra={"head_init": "shared"}, evals={"test_5way_1shot.json": [0.7, 0.8]})
    table = table_of(tmp_path)
    rows = {row.key.head_init: row for row in table.rows}
    assert set(rows) == {"per-class", "shared"}
    assert rows["shared"].cell(1).mean == pytest.approx(0.75) and rows["per-class"].cell(1).mean == pytest.approx(0.45)
    assert rows["shared"].key.label.endswith("adapt all, shared head")
    assert "shared head" not in rows["per-class"].key.label
    assert table.problems == []


def test_runs_that_differ_in_a_training_setting_are_rows_labelled_by_the_difference(make_run, tmp_path):
    make_run("grid", config_extra={"inner_lr": {"default": 0.1, "atoms": 0.003}},
             evals={"test_5way_1shot.json": [0.3, 0.3]})
    make_run("long", config_extra={"inner_lr": {"default": 0.1, "atoms": 0.003}, "iterations": 2000},
             evals={"test_5way_1shot.json": [0.5, 0.5]})
    make_run("lslr", config_extra={"inner_lr": {"default": 0.1, "atoms": 0.003}, "learn_inner_lr": "lslr"},
             evals={"test_5way_1shot.json": [0.4, 0.4]})
    make_run("five", shots=5, config_extra={"inner_lr": {"default": 0.1, "atoms": 0.0005}},
             evals={"test_5way_5shot.json": [0.6, 0.6]})  # alone at 5 shots: the plain row
    table = table_of(tmp_path)
    rows = {row.key.variant: row for row in table.rows}
    assert set(rows) == {"", "iterations=2000", "learn_inner_lr=lslr"}
    assert rows[""].cell(1).run.name == "runs/grid" and rows[""].cell(5).run.name == "runs/five"
    assert rows["iterations=2000"].cell(1).mean == pytest.approx(0.5)
    assert rows["learn_inner_lr=lslr"].cell(1).mean == pytest.approx(0.4)
    assert rows["iterations=2000"].key.label.endswith("adapt all · iterations=2000")
    assert table.problems == []


def test_variant_settings_are_config_keys_and_a_missing_one_reads_as_its_default(make_run, tmp_path):
    from fewshot_acdc.config import TrainConfig
    from fewshot_acdc.results.table import VARIANT_SETTINGS
    assert set(VARIANT_SETTINGS) <= {f.name for f in dataclasses.fields(TrainConfig)}
    make_run("old", evals={"test_5way_1shot.json": [0.3]})  # written before task_batching existed
    make_run("new", config_extra={"task_batching": TrainConfig.task_batching}, evals={"test_5way_1shot.json": [0.4]})
    [row] = table_of(tmp_path).rows
    assert row.key.variant == "" and row.cell(1).status == "conflict"


def test_one_inner_lr_for_every_role_reads_as_the_per_role_default(make_run, tmp_path):
    make_run("scalar", config_extra={"inner_lr": 0.1}, evals={"test_5way_1shot.json": [0.3]})
    make_run("mapping", config_extra={"inner_lr": {"default": 0.1}}, evals={"test_5way_1shot.json": [0.3]})
    make_run("atoms", config_extra={"inner_lr": {"default": 0.1, "atoms": 0.003}}, evals={"test_5way_1shot.json": [0.4]})
    table = table_of(tmp_path)
    rows = {row.key.variant: row for row in table.rows}
    assert set(rows) == {"", "inner_lr.atoms=0.003"}
    assert rows[""].cell(1).status == "conflict"  # the same setting written two ways


def test_two_settings_with_no_common_one_label_both_rows(make_run, tmp_path):
    make_run("a", config_extra={"inner_lr": {"atoms": 0.003, "default": 0.1}}, evals={"test_5way_1shot.json": [0.3]})
    make_run("b", config_extra={"inner_lr": {"atoms": 0.0005, "default": 0.1}}, evals={"test_5way_1shot.json": [0.2]})
    table = table_of(tmp_path)
    assert sorted(row.key.variant for row in table.rows) == ["inner_lr.atoms=0.0005", "inner_lr.atoms=0.003"]


def test_seeds_of_one_setting_stay_a_conflict_beside_another_setting(make_run, tmp_path):
    make_run("seed0", evals={"test_5way_1shot.json": [0.4]})
    make_run("seed1", config_extra={"seed": 1}, evals={"test_5way_1shot.json": [0.5]})
    make_run("fo", config_extra={"meta_batch": 8}, evals={"test_5way_1shot.json": [0.6]})
    table = table_of(tmp_path)
    rows = {row.key.variant: row for row in table.rows}
    assert rows[""].cell(1).status == "conflict" and len(rows[""].cell(1).candidates) == 2
    assert rows["meta_batch=8"].cell(1).mean == pytest.approx(0.6)


def test_a_run_with_no_evaluation_in_the_columns_does_not_label_the_others(make_run, tmp_path):
    make_run("table", config_extra={"omniglot_background": "all"}, evals={"test_5way_1shot.json": [0.4]})
    for name in ("small1", "small1-long", "small2"):  # evaluated on another benchmark only
        make_run(name, config_extra={"omniglot_background": name[:6]}, evals={"test_20way_1shot.json": [0.5]})
    [row] = table_of(tmp_path).rows
    assert row.key.variant == "" and row.cell(1).run.name == "runs/table"
