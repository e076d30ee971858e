"""Builders for fake run directories laid out exactly as docs/run_directory.md describes.

Helpers reach the tests as fixtures only (``episode_accuracies``, ``eval_payload``,
``make_run``, ``sweep``, ``sweep_report``), so no test imports this file by module name.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
import yaml

from fewshot_acdc.vocabulary import CONV_KIND_TABLE

QUERIES = 15
WAYS = 5


def _episode_accuracies(seed: int, n: int = 60, ways: int = WAYS, queries: int = QUERIES, p: float = 0.5):
    """Realistic per-episode accuracies: multiples of 1 / (ways * queries)."""
    rng = np.random.default_rng(seed)
    total = ways * queries
    return [int(k) / total for k in rng.binomial(total, p, size=n)]


def _eval_payload(
    accs: Sequence[float],
    *,
    ways: int = WAYS,
    shots: int = 1,
    split: str = "test",
    episode_set: str | None = "default",
    dataset: str = "miniimagenet",
    stored_mean: float | None = None,
    stored_ci95: float | None = None,
    episodes: int | None = None,
) -> dict[str, Any]:
    a = np.asarray(accs, dtype=float)
    if episode_set == "default":
        episode_set = f"{dataset}-{split}-{ways}w{shots}s{QUERIES}q-seed0"
    mean = float(a.mean()) if stored_mean is None else stored_mean
    ci = float(1.96 * a.std() / math.sqrt(a.size)) if stored_ci95 is None else stored_ci95
    d = {
        "dataset": dataset, "split": split, "ways": ways, "shots": shots, "queries": QUERIES,
        "episodes": len(a) if episodes is None else episodes, "episode_set": episode_set,
        "inner_steps_eval": 10, "checkpoint": "best", "checkpoint_iteration": 52000,
        "mean_accuracy": round(mean, 4), "ci95": round(ci, 4),
        "per_episode_accuracy": [float(x) for x in a],
    }
    if episode_set is None:
        del d["episode_set"]
    return d


class RunBuilder:
    def __init__(self, root: Path):
        self.root = root

    def __call__(
        self,
        name: str,
        *,
        backbone: str = "resnet18",
        conv: str = "standard",
        adapt: str = "all",
        shots: int = 1,
        ways: int = WAYS,
        size: int | None = 8,
        dataset: str = "miniimagenet",
        first_order: bool = False,
        status: str | None = "finished",
        error: str | None = None,
        total_parameters: int | None = 11_200_000,
        adapted_parameters: int | None = 11_200_000,
        seconds_per_meta_step: float | None = 1.25,
        peak_memory_mb: float | None = 2150.3,
        evals: dict[str, Any] | None = None,
        config: bool = True,
        metrics: Sequence[dict] | None = None,
        summary_extra: dict[str, Any] | None = None,
        config_extra: dict[str, Any] | None = None,
    ) -> Path:
        """A run directory. ``evals`` maps eval file names (``test_5way_1shot.json``) to a
        payload dict, a list of accuracies (payload built with defaults), or raw text."""
        run = self.root / name
        run.mkdir(parents=True)
        size = None if conv == "standard" else size  # what training writes: standard has no size
        identity = dict(
            backbone=backbone, conv=conv, size=size, group_size=None, adapt=adapt,
            first_order=first_order, dataset=dataset, ways=ways, shots=shots, image_size=84,
        )
        if config:
            # like TrainConfig.to_dict(): the kind's size under its own key
            cfg = {k: v for k, v in identity.items() if k != "size"}
            size_key = CONV_KIND_TABLE[conv].size_key if conv in CONV_KIND_TABLE else "atoms"
            if size_key is not None:
                cfg[size_key] = size
            cfg.update(iterations=60000, meta_batch=4, inner_steps=5, inner_lr=0.01,
                       meta_lr=0.001, queries_eval=QUERIES, test_episodes=600, seed=0)
            cfg.update(config_extra or {})
            (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        if metrics is not None:
            (run / "metrics.jsonl").write_text(
                "".join(json.dumps(m) + "\n" for m in metrics), encoding="utf-8"
            )
        if status == "failed":  # what training writes when it stops on an error
            summary = {"status": "failed", "error": error, "iteration": 1234}
            summary.update(summary_extra or {})
            (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
        elif status is not None:
            summary = dict(
                status=status, **identity, iterations=60000,
                total_parameters=total_parameters, adapted_parameters=adapted_parameters,
                seconds_per_meta_step=seconds_per_meta_step, peak_memory_mb=peak_memory_mb,
                best_val_accuracy=0.47, best_iteration=52000, device="cuda",
            )
            summary = {k: v for k, v in summary.items() if v is not None or k in ("size", "group_size")}
            if error is not None:
                summary["error"] = error
            summary.update(summary_extra or {})
            (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
        if evals:
            (run / "checkpoints").mkdir()
            (run / "checkpoints" / "best.pt").write_bytes(b"not a real checkpoint")
            (run / "eval").mkdir()
            for fname, payload in evals.items():
                if isinstance(payload, str):
                    text = payload
                else:
                    if isinstance(payload, (list, tuple)):
                        split, rest = fname.rsplit("_", 2)[0], fname.rsplit("_", 2)[1:]
                        fways, fshots = int(rest[0][: -len("way")]), int(rest[1][: -len("shot.json")])
                        payload = _eval_payload(
                            payload, ways=fways, shots=fshots, split=split, dataset=dataset
                        )
                    text = json.dumps(payload)
                (run / "eval" / fname).write_text(text, encoding="utf-8")
        return run


@pytest.fixture
def episode_accuracies():
    """``episode_accuracies(seed, n=60, ways=5, queries=15, p=0.5)``: a list of realistic
    per-episode accuracies (multiples of 1 / (ways * queries))."""
    return _episode_accuracies


@pytest.fixture
def eval_payload():
    """``eval_payload(accs, shots=1, episode_set="default", ...)``: an eval file's JSON object."""
    return _eval_payload


@pytest.fixture
def make_run(tmp_path) -> RunBuilder:
    """``make_run("name", backbone=..., evals={...})`` creates ``tmp_path/runs/name``."""
    return RunBuilder(tmp_path / "runs")


# ---------------------------------------------------------------------------------------------
# One realistic sweep, built once per session, with its report written once.

SWEEP_BACKBONES = {"resnet10": 0.50, "resnet18": 0.48, "resnet34": 0.51}
SWEEP_PARAMS = {  # (total, adapted) per (backbone, conv, adapt)
    ("resnet10", "standard", "all"): (4_906_181, 4_906_181),
    ("resnet10", "acdc-net", "all"): (1_234_567, 1_234_567),
    ("resnet18", "standard", "all"): (11_171_781, 11_171_781),
    ("resnet18", "acdc-net", "all"): (2_356_741, 2_356_741),
    ("resnet18", "acdc-net", "atoms"): (2_356_741, 73_728),
    ("resnet34", "standard", "all"): (21_279_941, 21_279_941),
    ("resnet34", "acdc-net", "all"): (3_987_654, 3_987_654),
    ("conv4", "standard", "all"): (121_093, 121_093),
}


class Sweep:
    """The runs of a small ResNet10/18/34 x standard/acdc-net sweep plus broken runs.

    ``accs[run_name]`` are the per-episode accuracies written into that run's eval file,
    ``runs[run_name]`` the keyword arguments it was built with.
    """

    def __init__(self, root: Path):
        self.root = root
        self.builder = RunBuilder(root / "runs")
        self.accs: dict[str, list[float]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        seed = 0
        for (backbone, conv, adapt), (total, adapted) in SWEEP_PARAMS.items():
            for shots in (1, 5):
                if backbone == "conv4" and shots == 5:
                    continue  # a row with a missing 5-shot cell
                seed += 1
                p = SWEEP_BACKBONES.get(backbone, 0.45) + (0.15 if shots == 5 else 0.0)
                p += {"standard": 0.0, "acdc-net": 0.05}[conv] - (0.02 if adapt == "atoms" else 0)
                name = f"{backbone}-{conv}-{adapt}-{shots}shot"
                accs = _episode_accuracies(seed, n=60, p=p)
                payload = _eval_payload(accs, shots=shots)
                if name == "resnet34-standard-all-5shot":
                    payload["episode_set"] = "miniimagenet-test-5w5s15q-seed1"  # cannot be paired
                kwargs = dict(
                    backbone=backbone, conv=conv, adapt=adapt, shots=shots,
                    total_parameters=total, adapted_parameters=adapted,
                    seconds_per_meta_step=round(0.5 + 0.1 * seed + (0.4 if shots == 5 else 0), 3),
                    peak_memory_mb=round(800.0 + 37.5 * seed + (600 if shots == 5 else 0), 1),
                )
                self.builder(name, evals={f"test_5way_{shots}shot.json": payload}, **kwargs)
                self.accs[name] = accs
                self.runs[name] = kwargs
        # broken runs: each must be listed with its reason, none may break the report
        self.builder("broken-unfinished", status=None, metrics=[{"iteration": 500}, {"iteration": 1000}])
        self.builder("broken-failed", status="failed", error="CUDA out of memory")
        self.builder("broken-noeval")
        self.builder("broken-corrupt-eval", evals={"test_5way_1shot.json": '{"per_episode_accuracy": [0.5,'})
        self.builder("broken-corrupt-summary")
        (root / "runs" / "broken-corrupt-summary" / "summary.json").write_text("{not json", encoding="utf-8")

    def name(self, backbone, conv, adapt, shots):
        return f"{backbone}-{conv}-{adapt}-{shots}shot"


@pytest.fixture(scope="session")
def sweep(tmp_path_factory) -> Sweep:
    return Sweep(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="session")
def sweep_report(sweep):
    """``(sweep, ReportPaths)`` for the full report of the sweep, written once."""
    from fewshot_acdc.results import write_report

    paths = write_report([sweep.root / "runs"], sweep.root / "report")
    return sweep, paths
