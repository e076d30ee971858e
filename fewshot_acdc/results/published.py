"""Published reference numbers, shown *beside* ours for context and never mixed with them.

Everything here is transcribed by hand from the paper. Whoever edits these numbers must check
them against the paper itself (table, setting and all) - they are not produced by this project
and no test can tell whether they are right.

The report renders them only in their own table section (``results.md`` / ``results.tex``), in
their own CSV (``published.csv``, never ``results.csv``), under their own key in
``results.json`` and as a separate, differently styled figure series labelled
``published (Chen et al. 2019)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The legend / table label that marks a number as published, not ours.
PUBLISHED_LABEL = "published (Chen et al. 2019)"


@dataclass(frozen=True)
class PublishedResult:
    method: str
    backbone: str  # same spelling as our summary.json ("resnet18")
    dataset: str
    ways: int
    shots: int
    accuracy: float  # percent, as printed in the paper
    ci95: float  # percent, as printed in the paper


@dataclass(frozen=True)
class PublishedSource:
    key: str
    label: str
    citation: str
    where: str
    setting: str
    results: tuple[PublishedResult, ...]

    def get(self, method: str, backbone: str, shots: int, ways: int = 5) -> PublishedResult | None:
        for r in self.results:
            if (r.method, r.backbone, r.shots, r.ways) == (method, backbone, shots, ways):
                return r
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "citation": self.citation,
            "where": self.where,
            "setting": self.setting,
            "note": "published numbers, not produced by this project; accuracies in percent",
            "results": [
                {
                    "method": r.method,
                    "backbone": r.backbone,
                    "dataset": r.dataset,
                    "ways": r.ways,
                    "shots": r.shots,
                    "accuracy_pct": r.accuracy,
                    "ci95_pct": r.ci95,
                }
                for r in self.results
            ],
        }


def _maml(backbone: str, one_shot: tuple[float, float], five_shot: tuple[float, float]):
    return (
        PublishedResult("MAML", backbone, "miniimagenet", 5, 1, *one_shot),
        PublishedResult("MAML", backbone, "miniimagenet", 5, 5, *five_shot),
    )


# Transcribed from Chen et al. 2019, Table A5 (miniImageNet, 5-way, with data augmentation).
# CHECK AGAINST THE PAPER WHEN EDITING: these values were typed in, not generated.
CHEN_2019 = PublishedSource(
    key="chen2019",
    label=PUBLISHED_LABEL,
    citation=(
        "Wei-Yu Chen, Yen-Cheng Liu, Zsolt Kira, Yu-Chiang Frank Wang, Jia-Bin Huang. "
        "A Closer Look at Few-shot Classification. ICLR 2019."
    ),
    where="Table A5",
    setting="miniImageNet, 5-way, with data augmentation; mean ± 95% CI over test episodes",
    results=(
        *_maml("conv4", (46.47, 0.82), (62.71, 0.71)),
        *_maml("resnet10", (54.69, 0.89), (66.62, 0.83)),
        *_maml("resnet18", (49.61, 0.92), (65.72, 0.77)),
        *_maml("resnet34", (51.46, 0.90), (65.90, 0.79)),
    ),
)

#: All published sources the report can show.
PUBLISHED: tuple[PublishedSource, ...] = (CHEN_2019,)
