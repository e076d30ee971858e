"""Spec: published reference numbers are shown for context, labelled as published and never
mixed with ours.

- one data structure with the citation (Chen et al. 2019, "A Closer Look at Few-shot
  Classification", Table A5: MAML on miniImageNet, 5-way);
- rendered in their own Markdown / LaTeX section, their own CSV and their own JSON key;
  results.csv and our table rows never contain them;
- ``published=False`` leaves them out everywhere.
"""

import csv
import json

from fewshot_acdc.results import CHEN_2019, PUBLISHED, PUBLISHED_LABEL, write_report

# Double entry of the brief's transcription, so an accidental edit shows up. A deliberate edit
# must be checked against the paper and then made in both places.
EXPECTED = {
    ("conv4", 1): (46.47, 0.82), ("conv4", 5): (62.71, 0.71),
    ("resnet10", 1): (54.69, 0.89), ("resnet10", 5): (66.62, 0.83),
    ("resnet18", 1): (49.61, 0.92), ("resnet18", 5): (65.72, 0.77),
    ("resnet34", 1): (51.46, 0.90), ("resnet34", 5): (65.90, 0.79),
}


def test_chen_2019_maml_numbers_and_citation():
    assert PUBLISHED == (CHEN_2019,)
    assert CHEN_2019.label == PUBLISHED_LABEL == "published (Chen et al. 2019)"
    assert "A Closer Look at Few-shot Classification" in CHEN_2019.citation
    assert CHEN_2019.where == "Table A5"
    got = {(r.backbone, r.shots): (r.accuracy, r.ci95) for r in CHEN_2019.results}
    assert got == EXPECTED
    assert {(r.method, r.dataset, r.ways) for r in CHEN_2019.results} == {("MAML", "miniimagenet", 5)}


def test_published_numbers_have_their_own_section_and_files(sweep_report):
    _, paths = sweep_report
    md = paths.markdown.read_text(encoding="utf-8")
    ours = md[md.index("## Our results"): md.index("## Paired comparisons")]
    pub = md[md.index("## Published reference numbers (not our runs)"): md.index("## Accuracy against")]
    assert "published (Chen et al. 2019)" in pub and "A Closer Look at Few-shot Classification" in pub
    assert "| MAML | ResNet10 | miniimagenet | 54.69 ± 0.89 | 66.62 ± 0.83 |" in pub
    assert "| MAML | Conv4 | miniimagenet | 46.47 ± 0.82 | 62.71 ± 0.71 |" in pub
    for acc, _ in EXPECTED.values():
        assert f"{acc:.2f}" not in ours
    assert "published" not in ours.lower()

    results_csv = paths.csv.read_text(encoding="utf-8")
    assert "published" not in results_csv.lower() and "54.69" not in results_csv
    with open(paths.published_csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["label"] for r in rows} == {"published (Chen et al. 2019)"}
    assert {(r["backbone"], int(r["shots"])): (float(r["accuracy_pct"]), float(r["ci95_pct"]))
            for r in rows} == EXPECTED

    data = json.loads(paths.json.read_text(encoding="utf-8"))
    [src] = data["published"]
    assert src["label"] == "published (Chen et al. 2019)" and len(src["results"]) == 8
    assert all("published" not in json.dumps(r) for r in data["table"]["rows"])

    tex = paths.latex.read_text(encoding="utf-8")
    ours_tex, pub_tex = tex.split("% published (Chen et al. 2019)")
    assert "54.69" not in ours_tex
    assert "MAML & ResNet10 & $54.69 \\pm 0.89$ & $66.62 \\pm 0.83$ \\\\" in pub_tex
    assert "Not our runs." in pub_tex


def test_published_can_be_left_out(make_run, tmp_path):
    make_run("a", evals={"test_5way_1shot.json": [0.5, 0.6]})
    paths = write_report([tmp_path / "runs"], tmp_path / "out", published=False)
    assert paths.published_csv is None and not (tmp_path / "out" / "published.csv").exists()
    assert "Published reference" not in paths.markdown.read_text(encoding="utf-8")
    assert "Chen" not in paths.latex.read_text(encoding="utf-8")
    assert json.loads(paths.json.read_text(encoding="utf-8"))["published"] == []
