"""Specification of fewshot_acdc.runs.grid: cells train, evaluate, are recorded without
checkpoints, and a recorded cell is never trained again (a grid continues across sessions)."""
import json

import yaml

from fewshot_acdc.runs.grid import Cell, cell_state, cells_product, run_grid


def _base(tiny_config, tmp_path):
    path = tmp_path / "base.yaml"
    values = tiny_config.to_dict()
    values.update(iterations=2, val_every=2, test_episodes=3)
    path.write_text(yaml.safe_dump(values))
    return path


def test_cells_are_trained_evaluated_recorded_and_then_skipped(tiny_config, tmp_path):
    base = _base(tiny_config, tmp_path)
    cells = [Cell("acdc", {"conv": "acdc-net", "adapt": "atoms"}, eval_shots=(1, 2)),
             Cell("standard", {"conv": "standard", "adapt": "all"}, eval_shots=(1,))]
    work, record = tmp_path / "work", tmp_path / "record"
    recorded = []
    states = run_grid(cells, base, work, record_root=record, log=lambda line: None,
                      on_recorded=lambda cell, path: recorded.append(cell.name))
    assert states == {"acdc": "new", "standard": "new"} and recorded == ["acdc", "standard"]
    for cell in cells:
        files = sorted(str(p.relative_to(record / cell.name)) for p in (record / cell.name).rglob("*") if p.is_file())
        assert "checkpoints" not in " ".join(files)
        assert {"config.yaml", "metrics.jsonl", "summary.json", "provenance.jsonl"} <= set(files)
        for shots in cell.eval_shots:
            assert json.loads((record / cell.name / "eval" / f"test_3way_{shots}shot.json").read_text())["episodes"] == 3
    assert json.loads((record / "acdc" / "provenance.jsonl").read_text().splitlines()[0])["event"] == "start"
    # a fresh clone: no work folder, the records alone make the cells done
    states = run_grid(cells, base, tmp_path / "fresh-work", record_root=record, log=lambda line: None)
    assert states == {"acdc": "recorded", "standard": "recorded"}
    assert not (tmp_path / "fresh-work").exists()


def test_an_interrupted_cell_resumes_and_a_trained_one_is_only_evaluated(tiny_config, tmp_path):
    base = _base(tiny_config, tmp_path)
    cell = Cell("acdc", {"conv": "acdc-net"}, eval_shots=(1,))
    work = tmp_path / "work"
    assert cell_state(work / "acdc", None, cell, 3) == "new"
    run_grid([cell], base, work, log=lambda line: None)  # no record folder: trained and evaluated only
    assert cell_state(work / "acdc", tmp_path / "record" / "acdc", cell, 3) == "evaluate"
    (work / "acdc" / "summary.json").unlink()  # as if stopped after the last checkpoint
    assert cell_state(work / "acdc", None, cell, 3) == "resume"


def test_cells_product_keeps_axis_order_and_drops_rejected_combinations():
    cells = cells_product(lambda c: f"{c['conv']}-{c['adapt']}", {"conv": ["standard", "acdc-net"],
                                                                  "adapt": ["all", "atoms"]},
                          keep=lambda c: not (c["conv"] == "standard" and c["adapt"] == "atoms"))
    assert [cell.name for cell in cells] == ["standard-all", "acdc-net-all", "acdc-net-atoms"]


def test_a_cell_with_a_benchmark_is_recorded_only_once_the_benchmark_file_is(tiny_config, tmp_path):
    base = _base(tiny_config, tmp_path)
    plain = Cell("acdc", {"conv": "acdc-net"}, eval_shots=(1,))
    work, record = tmp_path / "work", tmp_path / "record"
    run_grid([plain], base, work, record_root=record, log=lambda line: None)
    scored = Cell("acdc", {"conv": "acdc-net"}, eval_shots=(1,), benchmarks=("omniglot-all-runs",))
    assert cell_state(work / "acdc", record / "acdc", plain, 3) == "recorded"
    assert cell_state(work / "acdc", record / "acdc", scored, 3) == "evaluate"
    (record / "acdc" / "eval" / "omniglot-all-runs.json").write_text("{}")
    assert cell_state(work / "acdc", record / "acdc", scored, 3) == "recorded"


def test_an_unknown_benchmark_is_refused_naming_the_known_ones():
    import pytest
    with pytest.raises(ValueError, match="unknown benchmark.*omniglot-all-runs"):
        Cell("x", {}, benchmarks=("all-runs",))


def test_a_grid_refuses_to_start_from_uncommitted_code_unless_allowed(tiny_config, tmp_path, monkeypatch):
    import pytest

    from fewshot_acdc.runs import provenance
    monkeypatch.setattr(provenance, "_PROCESS_REVISION",
                        {"git_commit": "0" * 40, "uncommitted_changes": True, "diff_sha256": "cd" * 32})
    monkeypatch.delenv(provenance.ALLOW_DIRTY_ENV, raising=False)
    base = _base(tiny_config, tmp_path)
    cells = [Cell("standard", {"conv": "standard", "adapt": "all"}, eval_shots=(1,))]
    with pytest.raises(provenance.UncommittedChangesError, match="grid of training runs"):
        run_grid(cells, base, tmp_path / "work", record_root=tmp_path / "record", log=lambda line: None)
    assert not (tmp_path / "work").exists() and not (tmp_path / "record").exists()
    assert run_grid(cells, base, tmp_path / "work", dry_run=True, log=lambda line: None) == {"standard": "new"}
    run_grid(cells, base, tmp_path / "work", record_root=tmp_path / "record", log=lambda line: None, allow_dirty=True)
    for path in (tmp_path / "record" / "standard" / "provenance.jsonl", tmp_path / "record" / "standard" / "eval" /
                 "test_3way_1shot.json"):
        text = path.read_text()
        assert '"allowed_uncommitted": true' in text and "cd" * 32 in text
