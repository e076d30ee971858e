"""Specification of fewshot_acdc.results.diagnostics: the training-diagnostics figure and its numbers."""
import csv
import json

import pytest

from fewshot_acdc.results.diagnostics import curves, main, plot_diagnostics, read_metrics


def _line(iteration, **extra):
    return {"iteration": iteration, "meta_loss": 1.5 - 0.1 * iteration, "train_accuracy": 0.2 + 0.01 * iteration,
            "support_loss_by_step": [1.6, 1.2], "support_loss_after": 0.9,
            "grad_norm_by_role": {"atoms": 50.0 + iteration, "head": 2.0},
            "inner_grad_norm_by_role": {"atoms": [100.0 * iteration, 90.0], "head": [3.0, 2.0]}, **extra}


@pytest.fixture
def run(tmp_path):
    lines = [_line(1), _line(2, val_accuracy=0.4), {"iteration": 3, "meta_loss": 1.0, "train_accuracy": 0.5}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return tmp_path


def test_curves_align_every_series_with_the_iterations(run):
    data = curves(read_metrics(run))
    assert data["iteration"]["iteration"] == [1.0, 2.0, 3.0]
    assert data["inner_grad_norm"]["atoms"] == [100.0, 200.0, None]  # first inner step; absent -> None
    assert data["meta_grad_norm"]["atoms"] == [51.0, 52.0, None]
    assert data["accuracy"]["validation"] == [None, pytest.approx(40.0), None]  # percent
    assert data["loss"]["support, after adaptation"] == [0.9, 0.9, None]


def test_the_figure_and_its_numbers_are_written(run, tmp_path):
    out = plot_diagnostics(run, tmp_path / "out" / "diagnostics.png")
    assert out.stat().st_size > 10_000
    rows = list(csv.reader(open(out.with_suffix(".csv"))))
    assert rows[0][0] == "iteration" and "inner_grad_norm: atoms" in rows[0]
    column = rows[0].index("meta_grad_norm: head")
    assert [row[column] for row in rows[1:]] == ["2.0", "2.0", ""]


def test_a_torn_last_line_is_skipped_and_a_missing_run_is_an_error(run, tmp_path, capsys):
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"iteration": 4, "meta_')
    assert len(read_metrics(run)) == 3
    assert "line 4 is not JSON" in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.png")]) == 1
    assert "metrics.jsonl does not exist" in capsys.readouterr().err
