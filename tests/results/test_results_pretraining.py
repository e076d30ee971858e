"""Specification of fewshot_acdc.results.pretraining: the supervised-pretraining table."""
import json

from fewshot_acdc.results.__main__ import main
from fewshot_acdc.results.pretraining import collect_pretraining, render_markdown


def _write_run(root, name, **fields):
    run = root / name
    run.mkdir(parents=True)
    summary = {"status": "finished", "kind": "pretraining", "backbone": "resnet18", "conv": "acdc-net", "size": 8,
               "optimizer": "adam", "lr": 0.001, "lr_scaling": "none", "epochs": 15, "heldout_accuracy": 0.5,
               "heldout_ci95": 0.02, "best_val_accuracy": 0.8, "best_epoch": 2, "backbone_parameters": 1000,
               "seconds_per_epoch": 20.0, **fields}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "config.yaml").write_text("backbone: resnet18\n")
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "val_ci95": 0.01 * e}) + "\n" for e in (1, 2, 3)))
    return run


def test_rows_are_the_finished_pretraining_runs_in_table_order(tmp_path):
    _write_run(tmp_path, "b", lr_scaling="kernel")
    _write_run(tmp_path, "a")
    _write_run(tmp_path, "s", conv="standard", size=None, optimizer="sgd", lr=0.05)
    _write_run(tmp_path, "r10", backbone="resnet10")
    _write_run(tmp_path, "failed", status="failed")
    maml = tmp_path / "maml"
    maml.mkdir()
    (maml / "summary.json").write_text(json.dumps({"status": "finished", "backbone": "resnet18"}))
    rows = collect_pretraining([tmp_path])
    assert [r.name for r in rows] == ["r10", "s", "a", "b"]
    assert rows[2].val_ci95 == 0.02  # the best epoch's line
    assert rows[3].recipe == "adam 0.001, kernel lr scaling" and rows[1].network == "standard"
    table = render_markdown(rows)
    assert "| resnet18 | acdc-net, m=8 | adam 0.001 | 50.0% ± 2.0 | 80.0% ± 2.0 | 2/15 | 1,000 | 20 |" in table


def test_the_results_command_renders_the_table(tmp_path, capsys):
    _write_run(tmp_path / "runs", "a")
    assert main([str(tmp_path / "runs"), "--pretraining", "--out", str(tmp_path / "out")]) == 0
    assert "acdc-net, m=8" in (tmp_path / "out" / "pretraining.md").read_text()
    assert json.loads((tmp_path / "out" / "pretraining.json").read_text())[0]["name"] == "a"


def test_the_maml_table_leaves_pretraining_runs_to_their_own(tmp_path):
    from fewshot_acdc.results.runs import collect_runs
    _write_run(tmp_path / "runs", "pre")
    unfinished = tmp_path / "runs" / "pre-unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("backbone: resnet18\n")
    (unfinished / "provenance.jsonl").write_text('{"event": "start", "kind": "pretraining"}\n')
    maml = tmp_path / "runs" / "maml"
    maml.mkdir()
    (maml / "config.yaml").write_text("backbone: resnet18\n")
    assert [r.name for r in collect_runs([tmp_path / "runs"])] == ["runs/maml"]
