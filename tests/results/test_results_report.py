"""Spec: the written report. Every number in results.md / .csv / .tex / .json and in
comparisons.md / .csv is checked here against the per-episode accuracies the runs were built
with, recomputed independently (numpy / scipy), and against the runs' summary.json values.

Formats: accuracy ``48.43 ± 1.79 (600)`` in percent; parameters ``2.36M`` / ``73.7K`` in
Markdown and LaTeX, exact integers in CSV/JSON; seconds per meta-step with 3 significant
digits; peak memory in whole MB; one time / memory value per shot count (``1-shot / 5-shot``).
Broken runs are listed with their reasons and the report still renders.
"""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from fewshot_acdc.results import collect_runs, write_report
from fewshot_acdc.results.__main__ import main

ROWS = [  # (backbone, conv, adapt) of the sweep, in table order
    ("conv4", "standard", "all"),
    ("resnet10", "standard", "all"),
    ("resnet10", "acdc-net", "all"),
    ("resnet18", "standard", "all"),
    ("resnet18", "acdc-net", "all"),
    ("resnet18", "acdc-net", "atoms"),
    ("resnet34", "standard", "all"),
    ("resnet34", "acdc-net", "all"),
]
LABEL = {"conv4": "Conv4", "resnet10": "ResNet10", "resnet18": "ResNet18", "resnet34": "ResNet34",
         "standard": "standard", "acdc-net": "ACDC-net (8 atoms)"}


def md_tables(text):
    """All Markdown tables in ``text`` as lists of {header: cell} dicts."""
    tables, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split(" | ")])
        elif block:
            header, rows = block[0], block[2:]
            tables.append([dict(zip(header, r)) for r in rows])
            block = []
    return tables


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def section(text, heading):
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start: end if end != -1 else None]


def acc_stats(accs):
    a = np.asarray(accs)
    return 100 * a.mean(), 100 * 1.96 * a.std() / math.sqrt(a.size), a.size


def fmt_params(n):
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


@pytest.fixture(scope="module")
def expected(sweep_report):
    """{(backbone, conv, adapt): {shots: (mean%, ci%, n, run kwargs)}} from the sweep's inputs."""
    sweep, _ = sweep_report
    out = {}
    for key in ROWS:
        out[key] = {}
        for shots in (1, 5):
            name = sweep.name(*key, shots)
            if name in sweep.accs:
                out[key][shots] = (*acc_stats(sweep.accs[name]), sweep.runs[name], name)
    return out


def test_all_output_files_are_written(sweep_report):
    _, paths = sweep_report
    names = sorted(p.name for p in paths.all())
    assert names == sorted([
        "results.md", "results.csv", "results.tex", "comparisons.md", "comparisons.csv",
        "results.json", "accuracy_vs_depth.png", "accuracy_vs_depth.svg", "published.csv",
    ])
    assert all(p.stat().st_size > 0 for p in paths.all())


def test_markdown_table_shows_every_number(sweep_report, expected):
    _, paths = sweep_report
    text = paths.markdown.read_text(encoding="utf-8")
    table = md_tables(section(text, "## Our results"))[0]
    assert [(r["Backbone"], r["Conv"], r["Adapt"]) for r in table] == [
        (LABEL[b], LABEL[c], a) for b, c, a in ROWS
    ]
    for r, key in zip(table, ROWS):
        cells = expected[key]
        for shots in (1, 5):
            col = f"5-way {shots}-shot"
            if shots in cells:
                mean, ci, n, _, _ = cells[shots]
                assert r[col] == f"{mean:.2f} ± {ci:.2f} ({n})"
            else:
                assert r[col] == "—"
        kw = cells[1][3]
        assert r["Params"] == fmt_params(kw["total_parameters"])
        assert r["Adapted / task"] == fmt_params(kw["adapted_parameters"])
        assert r["s / meta-step (1-shot / 5-shot)"] == " / ".join(
            f"{cells[s][3]['seconds_per_meta_step']:#.3g}" if s in cells else "—" for s in (1, 5)
        )
        assert r["Peak memory MB (1-shot / 5-shot)"] == " / ".join(
            f"{cells[s][3]['peak_memory_mb']:.0f}" if s in cells else "—" for s in (1, 5)
        )
    # spot checks written out literally, so the format itself is pinned down
    r18_atoms = table[ROWS.index(("resnet18", "acdc-net", "atoms"))]
    assert (r18_atoms["Params"], r18_atoms["Adapted / task"]) == ("2.36M", "73.7K")
    assert table[0]["Params"] == "121.1K"


def test_csv_has_every_number_exactly(sweep_report, expected):
    _, paths = sweep_report
    with open(paths.csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["backbone"], r["conv"], r["adapt"]) for r in rows] == ROWS
    for r, key in zip(rows, ROWS):
        cells = expected[key]
        assert r["dataset"] == "miniimagenet" and r["first_order"] == "false"
        assert r["size"] == ("8" if key[1] == "acdc-net" else "")
        for shots in (1, 5):
            p = f"acc_5way_{shots}shot"
            if shots not in cells:
                assert (r[f"{p}_mean_pct"], r[f"{p}_status"], r[f"seconds_per_meta_step_{shots}shot"]) == ("", "missing", "")
                continue
            mean, ci, n, kw, name = cells[shots]
            assert float(r[f"{p}_mean_pct"]) == pytest.approx(mean, abs=1e-6)
            assert float(r[f"{p}_ci95_pct"]) == pytest.approx(ci, abs=1e-6)
            assert int(r[f"{p}_episodes"]) == n
            assert r[f"{p}_status"] == "ok"
            assert r[f"{p}_run"] == f"runs/{name}"
            assert r[f"{p}_episode_set"].startswith("miniimagenet-test-5w")
            assert float(r[f"seconds_per_meta_step_{shots}shot"]) == kw["seconds_per_meta_step"]
            assert float(r[f"peak_memory_mb_{shots}shot"]) == kw["peak_memory_mb"]
        kw = cells[1][3]
        assert int(r["total_parameters"]) == kw["total_parameters"]
        assert int(r["adapted_parameters"]) == kw["adapted_parameters"]


def test_latex_table_has_every_number(sweep_report, expected):
    _, paths = sweep_report
    tex = paths.latex.read_text(encoding="utf-8")
    ours = tex[: tex.index("tab:fewshot-results")]
    for key in ROWS:
        cells = expected[key]
        accs = []
        for shots in (1, 5):
            if shots in cells:
                mean, ci, n, _, _ = cells[shots]
                accs.append(f"${mean:.2f} \\pm {ci:.2f}$ ({n})")
            else:
                accs.append("--")
        kw = cells[1][3]
        line = " & ".join([
            LABEL[key[0]], LABEL[key[1]], key[2], *accs,
            fmt_params(kw["total_parameters"]), fmt_params(kw["adapted_parameters"]),
            "/".join(f"{cells[s][3]['seconds_per_meta_step']:#.3g}" if s in cells else "--" for s in (1, 5)),
            "/".join(f"{cells[s][3]['peak_memory_mb']:.0f}" if s in cells else "--" for s in (1, 5)),
        ]) + " \\\\"
        assert line in ours.splitlines()
    assert "\\begin{tabular}" in ours and "\\bottomrule" in ours


def test_json_dump_has_every_number(sweep_report, expected):
    sweep, paths = sweep_report
    data = json.loads(paths.json.read_text(encoding="utf-8"))
    assert data["schema_version"] == 1
    assert data["settings"]["split"] == "test" and data["settings"]["shots"] == [1, 5]
    rows = data["table"]["rows"]
    assert [(r["backbone"], r["conv"], r["adapt"]) for r in rows] == ROWS
    for r, key in zip(rows, ROWS):
        cells = expected[key]
        for shots in (1, 5):
            c = r["cells"][str(shots)]
            if shots not in cells:
                assert c["status"] == "missing" and c["mean_accuracy"] is None
                continue
            mean, ci, n, kw, name = cells[shots]
            assert c["mean_accuracy"] == pytest.approx(mean / 100)  # fractions in JSON
            assert c["ci95"] == pytest.approx(ci / 100)
            assert (c["episodes"], c["run"], c["status"]) == (n, f"runs/{name}", "ok")
            assert c["seconds_per_meta_step"] == kw["seconds_per_meta_step"]
            assert c["peak_memory_mb"] == kw["peak_memory_mb"]
        assert r["total_parameters"] == cells[1][3]["total_parameters"]
        assert r["adapted_parameters"] == cells[1][3]["adapted_parameters"]
    runs = {r["name"]: r for r in data["runs"]}
    assert len(runs) == len(sweep.accs) + 5
    some = "runs/resnet18-acdc-net-all-1shot"
    assert runs[some]["evals"][0]["per_episode_accuracy"] == sweep.accs[some[5:]]
    assert {r["run"]: r["status"] for r in data["problems"]["runs"]} == {
        "runs/broken-corrupt-eval": "no-evaluation",
        "runs/broken-corrupt-summary": "corrupt",
        "runs/broken-failed": "failed",
        "runs/broken-noeval": "no-evaluation",
        "runs/broken-unfinished": "unfinished",
    }


def _expected_comparisons(sweep):
    """(kind, run_a, run_b, shots) of the default comparisons, with stats computed here."""
    pairs = []
    for shots in (1, 5):
        for b in ("resnet10", "resnet18", "resnet34"):
            pairs.append(("conv", sweep.name(b, "acdc-net", "all", shots),
                          sweep.name(b, "standard", "all", shots), shots))
    pairs.sort(key=lambda p: (p[1].split("-")[0], p[3]))
    pairs += [("adapt", sweep.name("resnet18", "acdc-net", "atoms", s),
               sweep.name("resnet18", "acdc-net", "all", s), s) for s in (1, 5)]
    out = []
    for kind, a, b, shots in pairs:
        if a.startswith("resnet34") and shots == 5:  # different episode set: not paired
            out.append((kind, a, b, shots, None))
            continue
        d = np.subtract(sweep.accs[a], sweep.accs[b])
        p = sps.wilcoxon(np.round(d, 6)).pvalue  # rounded: equal differences tie exactly
        out.append((kind, a, b, shots, (d.mean(), 1.96 * d.std() / math.sqrt(d.size), p)))
    ps = [o[4][2] for o in out if o[4]]
    order = np.argsort(ps)
    holm = np.minimum(1, np.maximum.accumulate((len(ps) - np.arange(len(ps))) * np.array(ps)[order]))
    adjusted = dict(zip(order, holm))
    i = 0
    final = []
    for o in out:
        if o[4]:
            final.append((*o[:4], (*o[4], adjusted[i])))
            i += 1
        else:
            final.append(o)
    return final


def test_comparisons_csv_and_markdown_have_every_number(sweep_report):
    sweep, paths = sweep_report
    expected = _expected_comparisons(sweep)
    with open(paths.comparisons_csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["kind"], r["run_a"], r["run_b"], int(r["shots"])) for r in rows] == [
        (k, f"runs/{a}", f"runs/{b}", s) for k, a, b, s, _ in expected
    ]
    md = paths.comparisons_markdown.read_text(encoding="utf-8")
    md_rows = md_tables(md)[0]
    paired_rows = iter(md_rows)
    for r, (kind, a, b, shots, st) in zip(rows, expected):
        if st is None:
            assert r["paired"] == "false" and r["diff_pct"] == "" and r["p_value"] == ""
            assert r["reason"].startswith("different episode sets")
            assert f"{shots}-shot: different episode sets" in md
            continue
        diff, ci, p, p_holm = st
        assert r["paired"] == "true" and int(r["episodes"]) == 60
        assert float(r["diff_pct"]) == pytest.approx(100 * diff, abs=1e-6)
        assert float(r["diff_ci95_pct"]) == pytest.approx(100 * ci, abs=1e-6)
        assert float(r["diff_ci_low_pct"]) == pytest.approx(100 * (diff - ci), abs=1e-6)
        assert float(r["diff_ci_high_pct"]) == pytest.approx(100 * (diff + ci), abs=1e-6)
        assert float(r["p_value"]) == pytest.approx(p)
        assert float(r["p_holm"]) == pytest.approx(p_holm)
        assert float(r["mean_a_pct"]) == pytest.approx(100 * np.mean(sweep.accs[a]), abs=1e-6)
        assert float(r["mean_b_pct"]) == pytest.approx(100 * np.mean(sweep.accs[b]), abs=1e-6)
        verdict = "no significant difference" if p_holm >= 0.05 else ("A better" if diff > 0 else "B better")
        assert r["verdict"] == verdict and r["significant"] == str(p_holm < 0.05).lower()
        m = next(paired_rows)
        assert m["Protocol"] == f"test 5-way {shots}-shot" and m["Episodes"] == "60"
        assert m["Δ = A − B (pp) ± 95% CI"] == f"{100 * diff:+.2f} ± {100 * ci:.2f}"
        assert m["95% CI of Δ (pp)"] == f"[{100 * (diff - ci):+.2f}, {100 * (diff + ci):+.2f}]"
        assert m["p"] == (f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}")
        assert m["p (Holm)"] == (f"{p_holm:.4f}" if p_holm >= 1e-4 else f"{p_holm:.1e}")
        assert m["Verdict"].startswith(verdict)
    # the same comparisons appear in results.md
    assert md_tables(section(paths.markdown.read_text(encoding="utf-8"), "## Paired comparisons"))[0] == md_rows


def test_broken_runs_are_listed_with_reasons_and_the_report_still_renders(sweep_report):
    _, paths = sweep_report
    text = paths.markdown.read_text(encoding="utf-8")
    problems = section(text, "## Problems")
    assert "`runs/broken-unfinished` (unfinished): unfinished: no summary.json (training has not finished; last logged iteration 1000 of 60000)" in problems
    assert "`runs/broken-failed` (failed): failed: training stopped at iteration 1234 with an error: CUDA out of memory" in problems
    assert "`runs/broken-noeval` (no-evaluation): no evaluation: eval/ directory missing" in problems
    assert "`runs/broken-corrupt-eval` (no-evaluation): eval/test_5way_1shot.json: corrupt: invalid JSON (" in problems
    assert "`runs/broken-corrupt-summary` (corrupt): corrupt: summary.json: invalid JSON (" in problems
    runs = md_tables(section(text, "## Runs"))[0]
    status = {r["Run"]: r["Status"] for r in runs}
    assert status["`runs/broken-failed`"] == "failed"
    assert sum(s == "ok" for s in status.values()) == 15


def test_report_renders_with_no_usable_run_at_all(make_run, tmp_path):
    make_run("only-unfinished", status=None)
    paths = write_report([tmp_path / "runs", tmp_path / "does-not-exist"], tmp_path / "out")
    text = paths.markdown.read_text(encoding="utf-8")
    assert "No finished run has a usable evaluation yet" in text
    assert "path does not exist" in text and "(unfinished): unfinished: no summary.json" in text
    assert paths.csv.read_text().count("\n") == 1  # header only
    assert paths.figure_png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_cli_writes_the_report_and_strict_fails_on_problems(make_run, tmp_path, capsys):
    make_run("a", evals={"test_5way_1shot.json": [0.5, 0.6]})
    out = tmp_path / "out"
    assert main([str(tmp_path / "runs"), "--out", str(out), "--no-published"]) == 0
    assert "1 run(s) found, 1 used in the table" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "results.md", "results.csv", "results.tex", "comparisons.md", "comparisons.csv",
        "results.json", "accuracy_vs_depth.png", "accuracy_vs_depth.svg",
    ])
    assert main([str(tmp_path / "runs"), "--out", str(out), "--strict"]) == 0
    make_run("b", status="failed")
    assert main([str(tmp_path / "runs"), "--out", str(out), "--strict"]) == 1
    assert "runs/b [failed]" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["a file", "below a file", "a read-only filesystem"])
def test_cli_out_that_cannot_take_the_report_is_one_line_and_exit_1(make_run, tmp_path, capsys, monkeypatch, where):
    make_run("a", evals={"test_5way_1shot.json": [0.5, 0.6]})
    blocker = tmp_path / "taken"
    blocker.write_text("a file\n")
    out = {"a file": blocker, "below a file": blocker / "report", "a read-only filesystem": tmp_path / "ro"}[where]
    if where == "a read-only filesystem":  # (the tests may run as root, whom permissions do not stop)
        def read_only(*args, **kwargs):
            raise OSError(30, "Read-only file system")
        monkeypatch.setattr("tempfile.mkstemp", read_only)
    assert main([str(tmp_path / "runs"), "--out", str(out), "--no-published"]) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert "Traceback" not in captured.err and len(lines) == 1
    assert lines[0].startswith("python -m fewshot_acdc.results: error: ") and str(out) in lines[0]
    assert {"a file": "is a file", "below a file": f"below a file ({blocker} is a file)",
            "a read-only filesystem": "Read-only file system"}[where] in lines[0]
    assert blocker.read_text() == "a file\n"


def test_an_eval_file_scored_under_another_protocol_than_the_run_says_so(make_run, eval_payload, tmp_path):
    # Files from before other protocols got files of their own may hold one (evaluate.py --run R
    # --inner-steps-eval 0 replaced the run's number): the reader is told which protocol it used.
    payload = {**eval_payload([0.5, 0.6]), "inner_steps_eval": 0}
    make_run("a", evals={"test_5way_1shot.json": payload}, config_extra={"inner_steps_eval": 10})
    [record] = collect_runs([tmp_path / "runs"])
    result = record.get_eval("test", 5, 1)
    assert result.protocol_note == "inner_steps_eval=0" and result.to_dict()["protocol"] == "inner_steps_eval=0"
    assert "eval/test_5way_1shot.json: scored with inner_steps_eval=0, not the run's recorded protocol" in record.warnings


def test_cli_explicit_comparison(make_run, tmp_path, episode_accuracies):
    a = make_run("a", evals={"test_5way_1shot.json": episode_accuracies(1)})
    b = make_run("b", backbone="resnet10", evals={"test_5way_1shot.json": episode_accuracies(2)})
    out = tmp_path / "out"
    assert main([str(a), str(b), "--out", str(out), "--compare", str(a), str(b), "--shots", "1"]) == 0
    rows = read_csv(out / "comparisons.csv")
    assert [(r["kind"], r["run_a"], r["run_b"]) for r in rows] == [("explicit", "a", "b")]
    d = np.subtract(episode_accuracies(1), episode_accuracies(2))
    assert float(rows[0]["diff_pct"]) == pytest.approx(100 * d.mean(), abs=1e-6)


def test_python_dash_m_runs_headless(make_run, tmp_path):
    make_run("a", evals={"test_5way_1shot.json": [0.5, 0.6]})
    # an interactive backend and no display: only works if nothing opens a window
    env = {**os.environ, "MPLBACKEND": "TkAgg", "DISPLAY": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "fewshot_acdc.results", str(tmp_path / "runs"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, cwd=str(Path(__file__).resolve().parents[2]),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "accuracy_vs_depth.svg").exists()


def test_conflicts_notes_and_parameter_disagreements_are_visible(make_run, eval_payload, tmp_path):
    make_run("seed0", evals={"test_5way_1shot.json": [0.4, 0.6]})
    make_run("seed1", evals={"test_5way_1shot.json": [0.7, 0.7]})
    make_run("five", shots=5, total_parameters=123,
             evals={"test_5way_5shot.json": eval_payload([0.6, 0.8], shots=5, stored_mean=0.9)})
    make_run("r10-1", backbone="resnet10", total_parameters=1000, evals={"test_5way_1shot.json": [0.5]})
    make_run("r10-5", backbone="resnet10", shots=5, total_parameters=2000,
             evals={"test_5way_5shot.json": [0.5]})
    paths = write_report([tmp_path / "runs"], tmp_path / "out", published=False)
    text = paths.markdown.read_text(encoding="utf-8")
    r10, row = md_tables(section(text, "## Our results"))[0]
    assert r10["Params"] == "— [1]" and r10["Adapted / task"] == "11.20M"
    assert ("[1] total_parameters differ between the runs of this row "
            "(1-shot run: 1000, 5-shot run: 2000)") in text
    assert row["5-way 1-shot"] == "conflict: 2 runs [2]"
    assert row["5-way 5-shot"] == "70.00 ± 13.86 (2) [3]"  # std 0.1: 1.96 * 0.1 / sqrt(2)
    assert row["Params"] == "123"  # only the 5-shot run has a cell, so no disagreement
    assert "[2] 2 runs qualify (runs/seed0, runs/seed1); none is shown - see Problems" in text
    assert "[3] runs/five: eval/test_5way_5shot.json: stored mean_accuracy 0.9000 differs" in text
    assert "runs/seed0: 50.00 ± 13.86 (2); runs/seed1: 70.00 ± 0.00 (2)" in section(text, "## Problems")
    csv_r10, csv_row = read_csv(paths.csv)
    assert csv_r10["total_parameters"] == "" and "1-shot run: 1000" in csv_r10["notes"]
    assert (csv_row["acc_5way_1shot_status"], csv_row["acc_5way_1shot_mean_pct"]) == ("conflict", "")
    assert csv_row["acc_5way_1shot_run"] == "runs/seed0;runs/seed1"
    assert "stored mean_accuracy 0.9000" in csv_row["notes"]
    assert "conflict" in paths.latex.read_text(encoding="utf-8")


def test_several_datasets_get_separate_tables(make_run, tmp_path):
    make_run("mini", evals={"test_5way_1shot.json": [0.5]})
    make_run("omni", dataset="omniglot", evals={"test_5way_1shot.json": [0.9]})
    paths = write_report([tmp_path / "runs"], tmp_path / "out")
    text = paths.markdown.read_text(encoding="utf-8")
    assert "### Dataset: miniimagenet" in text and "### Dataset: omniglot" in text
    mini, omni = md_tables(section(text, "## Our results"))
    assert (mini[0]["5-way 1-shot"], omni[0]["5-way 1-shot"]) == ("50.00 ± 0.00 (1)", "90.00 ± 0.00 (1)")
    assert "\\emph{omniglot}" in paths.latex.read_text(encoding="utf-8")


def test_number_formats():
    from fewshot_acdc.results.render import fmt_acc, fmt_mb, fmt_params, fmt_seconds

    assert fmt_acc(0.4843, 0.0179, 600) == "48.43 ± 1.79 (600)"
    assert fmt_acc(None, None, None) == "—"
    assert [fmt_params(n) for n in (121_093, 73_728, 999, 2_356_741, 999_950)] == [
        "121.1K", "73.7K", "999", "2.36M", "1.00M"
    ]
    assert [fmt_seconds(s) for s in (0.0512, 1.0, 1.62, 12.345, 99.97, 812.4)] == [
        "0.0512", "1.00", "1.62", "12.3", "100", "812"
    ]
    assert (fmt_mb(2150.3), fmt_mb(None)) == ("2150", "—")


def test_cross_shot_evaluations_are_shown_and_labelled_in_every_output(make_run, tmp_path):
    # Issue 17: after `evaluate.py --shots 1 5` on a 1-shot run, results.md showed "—" for 5-shot.
    make_run("r18-1", conv="acdc-net", shots=1, seconds_per_meta_step=1.5, peak_memory_mb=2000.0,
             evals={"test_5way_1shot.json": [0.5, 0.7], "test_5way_5shot.json": [0.8, 0.9]})
    make_run("r18-std-1", conv="standard", shots=1,
             evals={"test_5way_1shot.json": [0.4, 0.6], "test_5way_5shot.json": [0.7, 0.7]})
    paths = write_report([tmp_path / "runs"], tmp_path / "out", published=False)
    text = paths.markdown.read_text(encoding="utf-8")
    standard, row = md_tables(section(text, "## Our results"))[0]
    assert standard["5-way 5-shot"].startswith("70.00 ± 0.00 (2), trained 1-shot")
    assert row["5-way 1-shot"] == "60.00 ± 13.86 (2)"
    assert row["5-way 5-shot"] == "85.00 ± 6.93 (2), trained 1-shot [2]"
    assert "[2] runs/r18-1: trained 1-shot, evaluated 5-shot (cross-shot)" in text
    assert row["s / meta-step (1-shot / 5-shot)"] == "1.50 / —"  # the 5-shot slot is no 5-shot training
    _, cross = md_tables(section(text, "## Cross-shot evaluations"))[0]  # in table order
    assert (cross["Run"], cross["Trained"], cross["Evaluated"], cross["Accuracy (%)"]) == (
        "`runs/r18-1`", "1-shot", "5-way 5-shot", "85.00 ± 6.93 (2)")
    assert cross["In the table"].startswith("yes")
    run, _ = md_tables(section(text, "## Runs"))[0]
    assert run["Evaluations"] == "test 5w1s, test 5w5s (cross-shot)"
    _, csv_row = read_csv(paths.csv)
    assert (csv_row["acc_5way_5shot_status"], csv_row["acc_5way_5shot_trained_shots"]) == ("cross-shot", "1")
    assert float(csv_row["acc_5way_5shot_mean_pct"]) == pytest.approx(85.0)
    assert (csv_row["acc_5way_1shot_status"], csv_row["acc_5way_1shot_trained_shots"]) == ("ok", "1")
    assert "(2), trained 1-shot" in paths.latex.read_text(encoding="utf-8")
    data = json.loads(paths.json.read_text(encoding="utf-8"))
    assert data["table"]["rows"][1]["cells"]["5"]["status"] == "cross-shot"
    assert [(c["run"], c["trained_shots"], c["shots"], c["in_table"]) for c in data["table"]["cross_shot"]] == [
        ("runs/r18-std-1", 1, 5, True), ("runs/r18-1", 1, 5, True)]
    # ACDC against standard is paired at 1 shot only: a cross-shot cell is another protocol
    assert [(c["kind"], c["shots"]) for c in data["comparisons"]] == [("conv", 1)]


def test_a_setting_variant_is_named_in_every_rendering(make_run, tmp_path):
    make_run("grid", evals={"test_5way_1shot.json": [0.3, 0.4]})  # iterations: 60000
    make_run("long", config_extra={"iterations": 2000}, evals={"test_5way_1shot.json": [0.5, 0.6]})
    paths = write_report([tmp_path / "runs"], tmp_path / "out", published=False)
    long, grid = md_tables(section(paths.markdown.read_text(encoding="utf-8"), "## Our results"))[0]
    # two runs, no common setting: both rows say theirs
    assert (long["Adapt"], grid["Adapt"]) == ("all (iterations=2000)", "all (iterations=60000)")
    assert long["5-way 1-shot"].startswith("55.00") and grid["5-way 1-shot"].startswith("35.00")
    assert [row["variant"] for row in read_csv(paths.csv)] == ["iterations=2000", "iterations=60000"]
    assert "all (iterations=2000)" in paths.latex.read_text(encoding="utf-8")
