"""Results tables and comparisons with the BasisConv, DCF and learnable-repetition kinds."""
from fewshot_acdc.results import build_table, collect_runs
from fewshot_acdc.results.compare import default_comparisons
from fewshot_acdc.results.table import conv_label


def test_labels_are_readable_and_say_what_the_size_means():
    assert conv_label("basis", 16) == "BasisConv (rank 16)"
    assert conv_label("dcf", 8) == "DCF (Fourier-Bessel) (8 atoms)"
    assert conv_label("repeat-net", 32) == "Repetition-net (base width 32)"
    assert conv_label("repeat-layer") == "Repetition-layer"
    assert conv_label("acdc-g-net", 8, 32) == "ACDC-g-net (8 atoms, group size 32)"


def test_each_kind_is_its_own_row_with_its_size_and_is_compared_with_plain_convs(make_run, episode_accuracies):
    make_run("std", conv="standard", evals={"test_5way_1shot.json": episode_accuracies(1)})
    make_run("basis16", conv="basis", size=16, adapt="all", evals={"test_5way_1shot.json": episode_accuracies(2)})
    make_run("basis32", conv="basis", size=32, adapt="all", evals={"test_5way_1shot.json": episode_accuracies(3)})
    make_run("dcf", conv="dcf", size=8, evals={"test_5way_1shot.json": episode_accuracies(4)})
    make_run("rep", conv="repeat-net", size=32, adapt="all", evals={"test_5way_1shot.json": episode_accuracies(5)})
    make_run("rep-scales", conv="repeat-net", size=32, adapt="scales",
             evals={"test_5way_1shot.json": episode_accuracies(6)})
    records = collect_runs([make_run.root])
    assert all(not record.warnings for record in records), [record.warnings for record in records]
    table = build_table(records)
    assert [(r.key.conv, r.key.size, r.key.adapt) for r in table.rows] == [
        ("standard", None, "all"), ("basis", 16, "all"), ("basis", 32, "all"), ("dcf", 8, "all"),
        ("repeat-net", 32, "all"), ("repeat-net", 32, "scales"),
    ]
    labels = [row.key.label for row in table.rows]
    assert "ResNet18 · MAML + BasisConv (rank 16) · adapt all" in labels
    assert "ResNet18 · MAML + Repetition-net (base width 32) · adapt scales" in labels
    comparisons = default_comparisons(table)
    conv_pairs = {(c.run_a, c.run_b) for c in comparisons if c.kind == "conv"}
    assert conv_pairs == {(f"runs/{name}", "runs/std") for name in ("basis16", "basis32", "dcf", "rep")}
    assert {(c.run_a, c.run_b) for c in comparisons if c.kind == "adapt"} == {("runs/rep-scales", "runs/rep")}
