"""Spec: the accuracy-against-depth figure (Figure 7 of the ACDC paper, our version).

- one panel per shot count, x = ResNet10/18/34, one line per method with 95% CI error bars;
- the plotted numbers are exactly the table's (percent), non-ResNet backbones are left out;
- published numbers are a separate series labelled ``published (Chen et al. 2019)``;
- a cross-shot cell (trained 1-shot, evaluated 5-shot) is its own series, labelled with the
  shot count it was trained at; every panel's y axis is in percent, empty panels included;
- saved as valid PNG and SVG without a display; the SVG is reproducible byte for byte.
"""

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from fewshot_acdc.results import (
    CHEN_2019,
    build_table,
    collect_runs,
    draw_accuracy_vs_depth,
    figure_series,
    plot_accuracy_vs_depth,
)


def svg_texts(path):
    """Text drawn in the SVG (matplotlib writes each string as a comment next to its glyphs)."""
    import re

    return set(re.findall(r"<!-- (.*?) -->", path.read_text(encoding="utf-8")))


def test_figure_files_are_valid_png_and_svg(sweep_report):
    _, paths = sweep_report
    png = paths.figure_png.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > 800 and height > 400
    root = ET.parse(paths.figure_svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = svg_texts(paths.figure_svg)
    assert {"miniimagenet: 5-way 1-shot", "miniimagenet: 5-way 5-shot",
            "ResNet10", "ResNet18", "ResNet34"} <= texts
    assert {"MAML, adapt all", "MAML + ACDC-net (8 atoms), adapt all",
            "MAML + ACDC-net (8 atoms), adapt atoms",
            "MAML, published (Chen et al. 2019)"} <= texts
    assert "Conv4" not in texts  # not a ResNet: in the table, not on the depth axis


def test_plotted_points_are_the_table_numbers(sweep_report):
    sweep, paths = sweep_report
    table = build_table(collect_runs([sweep.root / "runs"]))
    series = figure_series(table, [CHEN_2019])
    ours = {(s.label, s.shots): s for s in series if not s.published}
    assert sorted(ours) == sorted(
        (label, shots)
        for label in ("MAML, adapt all", "MAML + ACDC-net (8 atoms), adapt all",
                      "MAML + ACDC-net (8 atoms), adapt atoms")
        for shots in (1, 5)
    )
    s = ours[("MAML + ACDC-net (8 atoms), adapt all", 5)]
    assert [p.backbone for p in s.points] == ["resnet10", "resnet18", "resnet34"]
    for p in s.points:
        accs = sweep.accs[f"{p.backbone}-acdc-net-all-5shot"]
        assert p.accuracy == pytest.approx(100 * np.mean(accs))
        assert p.ci95 == pytest.approx(100 * 1.96 * np.std(accs) / math.sqrt(len(accs)))
        assert p.episodes == 60 and p.run == f"runs/{p.backbone}-acdc-net-all-5shot"
    assert [p.backbone for p in ours[("MAML + ACDC-net (8 atoms), adapt atoms", 1)].points] == ["resnet18"]


def test_published_series_is_separate_and_labelled(sweep_report):
    sweep, _ = sweep_report
    table = build_table(collect_runs([sweep.root / "runs"]))
    published = [s for s in figure_series(table, [CHEN_2019]) if s.published]
    assert [(s.label, s.shots) for s in published] == [
        ("MAML, published (Chen et al. 2019)", 1), ("MAML, published (Chen et al. 2019)", 5)
    ]
    one_shot = published[0]
    assert [(p.backbone, p.accuracy, p.ci95, p.run) for p in one_shot.points] == [
        ("resnet10", 54.69, 0.89, None), ("resnet18", 49.61, 0.92, None), ("resnet34", 51.46, 0.90, None)
    ]
    assert not any(s.published for s in figure_series(table, []))


def test_published_numbers_only_appear_beside_runs_on_the_same_dataset(make_run, tmp_path):
    make_run("omni", dataset="omniglot", evals={"test_5way_1shot.json": [0.9, 0.95]})
    table = build_table(collect_runs([tmp_path / "runs"]))
    assert [s.published for s in figure_series(table, [CHEN_2019])] == [False]


def test_empty_table_still_gives_a_figure(tmp_path):
    table = build_table([])
    plot_accuracy_vs_depth(table, tmp_path / "f.png", tmp_path / "f.svg", published=[CHEN_2019])
    assert (tmp_path / "f.png").read_bytes().startswith(b"\x89PNG")
    assert "no results" in svg_texts(tmp_path / "f.svg")


def test_svg_is_reproducible(sweep_report, tmp_path):
    sweep, _ = sweep_report
    table = build_table(collect_runs([sweep.root / "runs"]))
    plot_accuracy_vs_depth(table, None, tmp_path / "a.svg", published=[CHEN_2019])
    plot_accuracy_vs_depth(table, None, tmp_path / "b.svg", published=[CHEN_2019])
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()


def test_a_cross_shot_evaluation_is_plotted_and_labelled_as_such(make_run, tmp_path):
    # Issue 17: the 5-shot panel of a 1-shot run evaluated at 1 and 5 shots said "no results".
    make_run("r18-1", conv="acdc-net", shots=1,
             evals={"test_5way_1shot.json": [0.5, 0.7], "test_5way_5shot.json": [0.8, 0.9]})
    table = build_table(collect_runs([tmp_path / "runs"]))
    fig, series = draw_accuracy_vs_depth(table)
    assert [(s.label, s.shots, s.trained_shots) for s in series] == [
        ("MAML + ACDC-net (8 atoms)", 1, None),
        ("MAML + ACDC-net (8 atoms) (trained 1-shot)", 5, 1),
    ]
    assert series[1].points[0].accuracy == pytest.approx(85.0)
    one, five = fig.axes
    [line_1], [line_5] = one.get_lines()[:1], five.get_lines()[:1]
    assert line_1.get_color() == line_5.get_color()  # one method, one colour
    assert (line_1.get_linestyle(), line_5.get_linestyle()) == ("-", ":")
    plot_accuracy_vs_depth(table, None, tmp_path / "f.svg")
    texts = svg_texts(tmp_path / "f.svg")
    assert "MAML + ACDC-net (8 atoms) (trained 1-shot)" in texts and "no results" not in texts


def test_every_panel_is_in_percent_even_with_nothing_to_plot(make_run, tmp_path):
    make_run("r18-1", shots=1, evals={"test_5way_1shot.json": [0.5, 0.7]})
    fig, _ = draw_accuracy_vs_depth(build_table(collect_runs([tmp_path / "runs"])))
    one, five = fig.axes
    low, high = five.get_ylim()
    assert not five.get_lines() and five.get_ylabel() == one.get_ylabel() == "accuracy (%) ± 95% CI"
    assert low <= 60 - 13.86 and high >= 60 + 13.86 and high <= 100  # the other panel's range, in %
    fig, _ = draw_accuracy_vs_depth(build_table([]))
    assert [ax.get_ylim() for ax in fig.axes] == [(0.0, 100.0), (0.0, 100.0)]
