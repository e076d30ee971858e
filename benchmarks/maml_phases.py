"""Where a MAML meta-step's time goes: inner loop, query forward, meta-gradient backward.

    python benchmarks/maml_phases.py                      # ResNet18 ACDC-net, 84 px, all vs atoms
    python benchmarks/maml_phases.py --backbones resnet10,resnet18,resnet34 --convs standard,acdc-net

One task (5-way 1-shot, 15 queries per class, 5 inner steps; the grid's setting), the engine's
own functions, one torch thread. Each meta-step is split into

* ``inner``: the inner loop on the support set (with its graph in second order);
* ``query_forward``: the query loss at the adapted parameters;
* ``backward``: the meta-gradient, through the query pass and (second order) the inner loop.

and one more measurement, ``query_pass``: the query forward and backward at the meta-parameters,
with no inner loop. Every scope pays for it (the query set is the same and its backward reaches
every parameter), so it is a floor under any scope's meta-step: ``floor_share`` is its fraction
of scope ``all``'s step, and ``atoms_part_ratio`` compares the rest (what a scope can change)
between ``atoms`` and ``all``. ``atoms_part_needed`` is the value that rest would need for
``atoms`` to take 0.75x of ``all`` (the issue-7 target). Everything runs in this one process;
the configurations of a backbone and conv share one model and episode and take their repeats in
turn; a phase's time is its median over repeats (after one warm-up). Saved to ``benchmarks/results/maml_phases.json``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from benchmarks.common import configuration_grid, created_now, random_episode, revision_at_start, save_report  # noqa: E402
from fewshot_acdc.meta import adapted_parameter_names  # noqa: E402
from fewshot_acdc.meta.functional import inner_loop, score_query  # noqa: E402
from fewshot_acdc.models import create_backbone  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "maml_phases.json")
ATOMS_TARGET = 0.75
PHASES = ("inner", "query_forward", "backward")


def timed_meta_step(model, episode, adapted_names: List[str], order: str, inner_steps: int,
                    inner_lr: float) -> Dict[str, float]:
    """One task's meta-gradient, phase by phase (seconds)."""
    params = dict(model.named_parameters())
    start = time.perf_counter()
    adapted, _ = inner_loop(model, params, adapted_names, episode.support_images, episode.support_labels,
                            inner_lr=inner_lr, steps=inner_steps, create_graph=order == "second")
    inner_done = time.perf_counter()
    loss, _ = score_query(model, adapted, episode.query_images, episode.query_labels)
    forward_done = time.perf_counter()
    loss.backward()
    backward_done = time.perf_counter()
    model.zero_grad(set_to_none=True)
    return {"inner": inner_done - start, "query_forward": forward_done - inner_done,
            "backward": backward_done - forward_done}


def timed_query_pass(model, episode) -> Dict[str, float]:
    """The query forward and backward at the meta-parameters: the part of every meta-step that
    no inner-loop scope changes."""
    start = time.perf_counter()
    loss, _ = score_query(model, dict(model.named_parameters()), episode.query_images, episode.query_labels)
    loss.backward()
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return {"query_pass": seconds}


def measure_backbone(backbone: str, conv: str, scopes: List[str], orders: List[str], args) -> List[Dict]:
    torch.manual_seed(0)
    model = create_backbone(backbone, conv, num_classes=args.ways, image_size=args.image_size,
                            track_running_stats=False)
    # The grid's first episode (benchmarks/maml_step.py draws from the same seed).
    episode = random_episode(torch.Generator().manual_seed(1234), args.image_size, args.ways, args.shots, args.queries)
    runs: Dict[tuple, Callable[[], Dict[str, float]]] = {("query-pass", "-"): lambda: timed_query_pass(model, episode)}
    for _, _, scope, order in configuration_grid([backbone], [conv], scopes, orders):
        names = adapted_parameter_names(model, scope)
        runs[(scope, order)] = (lambda names=names, order=order:
                                timed_meta_step(model, episode, names, order, args.inner_steps, args.inner_lr))
    samples: Dict[tuple, List[Dict[str, float]]] = {key: [] for key in runs}
    for repeat in range(args.repeats + 1):  # repeat 0 warms up
        for key, run in runs.items():
            timings = run()
            if repeat:
                samples[key].append(timings)
    rows = []
    for (scope, order), timings in samples.items():
        row = {"backbone": backbone, "conv": conv, "scope": scope, "order": order, "image_size": args.image_size}
        for phase in timings[0]:
            row[phase] = statistics.median(sample[phase] for sample in timings)
        row["total"] = statistics.median(sum(sample.values()) for sample in timings)
        rows.append(row)
    return rows


def floor_summary(rows: List[Dict]) -> List[Dict]:
    """Per backbone, conv and order: the query pass as a share of scope ``all``'s step, and what
    ``atoms`` does with the rest."""
    summaries = []
    floors = {(row["backbone"], row["conv"]): row["query_pass"] for row in rows if row["scope"] == "query-pass"}
    steps = {(row["backbone"], row["conv"], row["scope"], row["order"]): row["total"]
             for row in rows if row["scope"] != "query-pass"}
    for (backbone, conv, scope, order), all_total in steps.items():
        atoms_total = steps.get((backbone, conv, "atoms", order))
        if scope != "all" or atoms_total is None:
            continue
        floor = floors[(backbone, conv)]
        rest = all_total - floor
        summaries.append({
            "backbone": backbone, "conv": conv, "order": order, "query_pass": floor, "all": all_total,
            "atoms": atoms_total, "atoms_vs_all": atoms_total / all_total, "floor_share": floor / all_total,
            "atoms_part_ratio": (atoms_total - floor) / rest if rest > 0 else float("nan"),
            "atoms_part_needed": (ATOMS_TARGET * all_total - floor) / rest if rest > 0 else float("nan"),
        })
    return summaries


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default="resnet18")
    parser.add_argument("--convs", default="acdc-net")
    parser.add_argument("--scopes", default="all,atoms")
    parser.add_argument("--orders", default="second,first")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--inner-steps", type=int, default=5)
    parser.add_argument("--inner-lr", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    revision_at_start()  # the code measured is the code now, whatever is committed meanwhile
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    torch.set_num_threads(args.threads)
    rows = []
    for backbone in args.backbones.split(","):
        for conv in args.convs.split(","):
            for row in measure_backbone(backbone, conv, args.scopes.split(","), args.orders.split(","), args):
                phases = " ".join(f"{phase} {row[phase]:.2f}" for phase in (*PHASES, "query_pass") if phase in row)
                print(f"{backbone} {args.image_size}px {conv} {row['scope']} {row['order']}: {phases} "
                      f"(total {row['total']:.2f} s)", flush=True)
                rows.append(row)
    summaries = floor_summary(rows)
    for summary in summaries:
        print(f"{summary['backbone']} {summary['conv']} {summary['order']}: query pass {summary['floor_share']:.0%} of "
              f"scope all; atoms {summary['atoms_vs_all']:.2f}x all; the rest {summary['atoms_part_ratio']:.2f}x "
              f"(0.75x overall needs {summary['atoms_part_needed']:.2f}x)")
    report = {"created": created_now(),
              "command": "python benchmarks/maml_phases.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "torch": torch.__version__, "threads": args.threads,
              "settings": {name: getattr(args, name) for name in ("ways", "shots", "queries", "inner_steps",
                                                                  "inner_lr", "repeats")},
              "rows": rows, "floor": summaries}
    save_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
