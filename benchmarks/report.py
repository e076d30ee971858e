"""docs/performance.md from the saved benchmark JSON (nothing is measured here).

    python benchmarks/report.py            # reads benchmarks/results/*.json, writes docs/performance.md

Sources: ``maml_step*.json`` from benchmarks/maml_step.py, ``maml_phases.json`` from
benchmarks/maml_phases.py, ``saved_tensors.json`` from benchmarks/saved_tensors.py,
``precision.json`` from benchmarks/precision.py, ``evaluation.json`` and
``evaluation_processes.json`` (``--processes``) from benchmarks/evaluation.py,
``maml_step_nn_split.json`` (``--source-trees``) and ``maml_step_recompute.json`` (orders
``second,second-recompute,first``) from benchmarks/maml_step.py and
``data_throughput.json`` from benchmarks/data_throughput.py.
Every number in the page comes from one of them; the page names the command and machine of each.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def load(name: str) -> Optional[Dict]:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def source_text(report: Dict) -> str:
    """Which code a report measured (``source``, added by benchmarks.common.save_report); reports
    saved before it was recorded say nothing."""
    commit = (report.get("source") or {}).get("git_commit")
    if not commit:
        return ""
    changed = " with uncommitted changes" if report["source"].get("uncommitted_changes") else ""
    return f", code at {commit[:7]}{changed}"


def machine_line(report: Dict) -> str:
    load_average = report.get("load_average_at_start") or report.get("load_average_at_end")
    shown = f", load average {load_average[0]:.1f}" if load_average else ""
    return (f"{report.get('device', 'cpu')} ({report.get('device_name', '?')}, {report.get('cpu_count', '?')} cores"
            f"{shown}), torch {report.get('torch', '?')}, created {report.get('created', '?')}{source_text(report)}")


def step_table(report: Dict) -> List[str]:
    implementations = [name for name in ("engine", "learn2learn", "higher")
                       if any(row["implementation"] == name for row in report["rows"])]
    memory = "peak MB" if report.get("device") == "cuda" else "MB added"
    header = "| backbone | px | conv | scope | order | " + " | ".join(
        f"{name} s/step | {name} {memory}" for name in implementations) + " |"
    lines = [header, "|" + "---|" * (5 + 2 * len(implementations))]
    groups: Dict[tuple, Dict[str, Dict]] = {}
    for row in report["rows"]:
        key = (row["backbone"], row["image_size"], row["conv"], row["scope"], row["order"])
        groups.setdefault(key, {})[row["implementation"]] = row
    for (backbone, size, conv, scope, order), by_impl in groups.items():
        cells = []
        for name in implementations:
            row = by_impl.get(name)
            if row is None:
                cells += ["", ""]
            elif "seconds_per_step" in row:
                cells += [f"{row['seconds_per_step']:.2f}", f"{row.get('added_memory_mb', float('nan')):.0f}"]
            else:
                cells += [f"error: {row.get('error', '?')[:40]}", ""]
        lines.append(f"| {backbone} | {size} | {conv} | {scope} | {order} | " + " | ".join(cells) + " |")
    return lines


def ratio_table(report: Dict) -> List[str]:
    lines = ["| comparison | backbone | px | conv | scope | order | time ratio | memory ratio | target |",
             "|---|---|---|---|---|---|---|---|---|"]
    for entry in report.get("ratios", []):
        targets = []
        for kind in ("time", "memory"):
            if f"{kind}_limit" in entry:
                verdict = "met" if entry[f"{kind}_met"] else "**missed**"
                targets.append(f"{kind} <= {entry[f'{kind}_limit']:.2f}: {verdict}")
        memory = f"{entry['memory_ratio']:.3f}" if "memory_ratio" in entry else ""
        lines.append(f"| {entry['comparison']} | {entry['backbone']} | {entry['image_size']} | {entry['conv']} | "
                     f"{entry['scope']} | {entry['order']} | {entry['time_ratio']:.3f} | {memory} | "
                     f"{'; '.join(targets)} |")
    return lines


def memory_measure(report: Dict) -> str:
    if report.get("device") == "cuda":
        return "CUDA allocator peak"
    if report["settings"].get("cpu_memory") == "live":
        return ("peak of live tensors: peak RSS minus RSS before the first step, in a run whose malloc hands "
                "freed blocks back at once")
    return "peak RSS minus RSS before the first step, default allocator"


def step_section(title: str, report: Dict) -> List[str]:
    settings = report["settings"]
    return [
        f"## {title}", "",
        f"`{report.get('command', 'python benchmarks/maml_step.py')}` on {machine_line(report)}.",
        f"5-way {settings['shots']}-shot, {settings['queries']} queries per class, {settings['inner_steps']} inner "
        f"steps (lr {settings['inner_lr']}), meta-batch {settings['meta_batch']} ({settings['task_batching']}), "
        f"{settings.get('threads') or 'default'} torch thread(s), median of {settings.get('rounds', 1)} interleaved "
        f"round(s). Memory: what the meta-steps added to the process ({memory_measure(report)}).",
        "", *step_table(report), "", "Ratios (numerator / denominator; time ratio < 1 is faster):", "",
        *ratio_table(report), "",
    ]


def phases_section(report: Dict) -> List[str]:
    settings = report["settings"]
    lines = ["## Where a meta-step's time goes", "",
             f"`{report.get('command')}`, torch {report.get('torch', '?')}, {report.get('threads', '?')} thread(s), "
             f"created {report.get('created', '?')}{source_text(report)}: one task ({settings['ways']}-way "
             f"{settings['shots']}-shot, {settings['queries']} queries per class, {settings['inner_steps']} inner "
             f"steps), seconds per phase (median of {settings['repeats']} repeats). `query pass` is the query forward "
             "and backward at the meta-parameters without an inner loop: every scope pays it.", "",
             "| backbone | px | conv | scope | order | inner loop | query forward | backward | total | query pass |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        cells = [f"{row[phase]:.2f}" if phase in row else "" for phase in
                 ("inner", "query_forward", "backward", "total", "query_pass")]
        lines.append(f"| {row['backbone']} | {row['image_size']} | {row['conv']} | {row['scope']} | {row['order']} | "
                     + " | ".join(cells) + " |")
    lines += ["", "What the `atoms` scope can change: the part of scope `all`'s step above the query pass "
              "(`rest`), and what that part would need to be for `atoms` to take 0.75x of `all`:", "",
              "| backbone | conv | order | query pass / all | atoms / all | atoms' rest / all's rest "
              "| needed for 0.75x |",
              "|---|---|---|---|---|---|---|"]
    for entry in report["floor"]:
        lines.append(f"| {entry['backbone']} | {entry['conv']} | {entry['order']} | {entry['floor_share']:.2f} | "
                     f"{entry['atoms_vs_all']:.2f} | {entry['atoms_part_ratio']:.2f} | "
                     f"{entry['atoms_part_needed']:.2f} |")
    return lines + [""]


def saved_tensors_section(report: Dict) -> List[str]:
    lines = ["## What the graph holds when the query loss is computed", "",
             f"`{report.get('command')}`, torch {report.get('torch', '?')}, created {report.get('created', '?')}"
             f"{source_text(report)}: "
             "one task (5-way 1-shot, 15 queries per class, 5 inner steps); bytes saved for backward by the "
             "graph's nodes, each storage once, parameters excluded. Exact, allocator-independent; the "
             "three ops that hold most are named.", "",
             "| backbone | px | conv | scope | order | saved MB | largest holders (MB) |", "|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        holders = ", ".join(f"{op} {size:.0f}" for op, size in list(row["by_op_mb"].items())[:3])
        lines.append(f"| {row['backbone']} | {row['image_size']} | {row['conv']} | {row['scope']} | {row['order']} | "
                     f"{row['saved_mb']:.0f} | {holders} |")
    return lines + [""]


def precision_section(report: Dict) -> List[str]:
    rows = report["rows"]
    rates = any(isinstance(row.get("inner_lr"), dict) for row in rows)
    title = ("Meta-gradient accuracy with per-role inner step sizes: float32 against float64" if rates else
             "Meta-gradient accuracy: float32 and bfloat16 autocast against float64")
    lines = [f"## {title} ({report.get('device', 'cpu')})", "",
             f"`{report.get('command')}` on {report.get('device_name', report.get('device', '?'))}, torch "
             f"{report.get('torch', '?')}, created {report.get('created', '?')}{source_text(report)}: one task's "
             "meta-gradient, same initialization and episode; relative error |g - g64| / |g64| and cosine to the "
             "float64 gradient.", "",
             "| backbone | px | conv | scope | order | inner lr | float32 rel. error | float32 cosine | "
             "bf16-autocast rel. error | bf16-autocast cosine |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        single, mixed = row["float32"], row.get("bfloat16-autocast")
        rate = row.get("inner_lr", "")
        rate = ", ".join(f"{role} {value:g}" for role, value in rate.items()) if isinstance(rate, dict) else f"{rate:g}"
        bf16 = f"{mixed['relative_error']:.2f} | {mixed['cosine']:.3f}" if mixed else "— | —"
        lines.append(f"| {row['backbone']} | {row['image_size']} | {row['conv']} | {row['scope']} | {row['order']} | "
                     f"{rate} | {single['relative_error']:.1e} | {single['cosine']:.4f} | {bf16} |")
    return lines + [""]


def evaluation_section(report: Dict, loader: Optional[Dict]) -> List[str]:
    settings = report["settings"]
    lines = ["## Evaluation and data loading", "",
             f"`{report.get('command')}` on {machine_line(report)}: 5-way, {settings['queries']} queries per class, "
             f"{settings['inner_steps_eval']} inner steps without second-order graph, {settings['image_size']} px, "
             f"built-in dataset through the real episode loader.", "",
             "| backbone | conv | scope | shots | evaluated episodes/s | 600 episodes | loader episodes/s | headroom |",
             "|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        lines.append(f"| {row['backbone']} | {row['conv']} | {row['scope']} | {row['shots']} | "
                     f"{row['evaluation_episodes_per_second']:.2f} | {row['seconds_for_600_episodes']:.0f} s | "
                     f"{row['loader_episodes_per_second']:.0f} | {row['loader_headroom']:.0f}x |")
    batched_rows = [row for row in report["rows"] if row.get("batched")]
    if batched_rows:  # reports since batched evaluation (MAML.evaluate_episodes) was added
        lines += ["", "Batched evaluation (episodes stacked with torch.func.vmap) on the same episodes:", "",
                  "| backbone | conv | scope | shots | stack | batched episodes/s | batched / sequential | "
                  "max query-loss difference |", "|---|---|---|---|---|---|---|---|"]
        for row in batched_rows:
            for entry in row["batched"]:
                lines.append(f"| {row['backbone']} | {row['conv']} | {row['scope']} | {row['shots']} | "
                             f"{entry['eval_batch']} | {entry['episodes_per_second']:.2f} | "
                             f"{entry['over_sequential']:.2f}x | {entry['max_query_loss_difference']:.1e} |")
    if loader:
        lines += ["", f"Episode loader alone (`python benchmarks/data_throughput.py`, {loader.get('created', '?')}):", "",
                  "| dataset | queries | augment | workers | episodes/s |", "|---|---|---|---|---|"]
        for row in loader["results"]:
            lines.append(f"| {row['dataset']} | {row['queries']} | {row['augment']} | {row['num_workers']} | "
                         f"{row['episodes_per_second']:.1f} |")
    return lines + [""]


def source_trees_section(title: str, report: Dict) -> List[str]:
    """A maml_step.py --source-trees report: each checkout's time and memory per configuration,
    and each one's ratio to the first checkout's."""
    trees = report["source_trees"]
    names = ", ".join(f"`{tree['label']}` = {str(tree.get('git_commit') or '?')[:7]}" for tree in trees)
    memory = "peak MB" if report.get("device") == "cuda" else "MB added"
    lines = [f"## {title}", "", f"`{report.get('command')}` on {machine_line(report)}; checkouts {names}, "
             f"interleaved in each of {report['settings'].get('rounds', '?')} rounds (medians):", "",
             "| backbone | px | conv | scope | order | checkout | s/step | " + memory + " |",
             "|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        measured = (f"{row['seconds_per_step']:.2f} | {row.get('added_memory_mb', float('nan')):.0f}"
                    if "seconds_per_step" in row else f"error: {row.get('error', '?')[:40]} |")
        lines.append(f"| {row['backbone']} | {row['image_size']} | {row['conv']} | {row['scope']} | {row['order']} | "
                     f"{row.get('source', '')} | {measured} |")
    lines += ["", "| checkouts | backbone | px | conv | scope | order | time ratio | memory ratio |",
              "|---|---|---|---|---|---|---|---|"]
    for entry in report.get("source_ratios", []):
        memory = f"{entry['memory_ratio']:.3f}" if "memory_ratio" in entry else ""
        lines.append(f"| {entry['source']} | {entry['backbone']} | {entry['image_size']} | {entry['conv']} | "
                     f"{entry['scope']} | {entry['order']} | {entry['time_ratio']:.3f} | {memory} |")
    return lines + [""]


RECOMPUTE_ORDERS = (("second", "second order"), ("second-recompute", "recomputed"), ("first", "first order"))


def recompute_section(report: Dict) -> List[str]:
    """A maml_step.py run of plain second order, recomputed inner steps and first order side by
    side: per backbone, image size and inner steps, each order's time and memory, and the
    recomputed path's ratios to plain second order against issue 34's limits. Configurations that
    were not run (predicted over the memory cap) or failed show why."""
    settings = report["settings"]
    memory = "peak MB" if report.get("device") == "cuda" else "MB added"
    lines = ["## Second order in bounded memory: recomputed inner steps (issue 34)", "",
             f"`{report.get('command')}` on {machine_line(report)}: 5-way {settings['shots']}-shot, "
             f"{settings['queries']} queries per class, meta-batch {settings['meta_batch']}, "
             f"{settings.get('threads') or 'default'} torch thread(s), {settings.get('warmup', 1)} warm-up and "
             f"{settings['repeats']} timed meta-step(s) per configuration, each in its own process, "
             f"{settings.get('rounds', 1)} round(s). Memory: what the meta-step added to the process "
             f"({memory_measure(report)}); "
             + (f"a process could take at most {settings['memory_cap_mb']:.0f} MB." if settings.get("memory_cap_mb")
                else "no memory cap."), "",
             "| backbone | px | conv | scope | inner steps | " + " | ".join(
                 f"{name} s/step | {name} {memory}" for _, name in RECOMPUTE_ORDERS) + " |",
             "|" + "---|" * (5 + 2 * len(RECOMPUTE_ORDERS))]
    groups: Dict[tuple, Dict[str, Dict]] = {}
    for row in report["rows"]:
        key = (row["backbone"], row["image_size"], row["conv"], row["scope"], row["inner_steps"])
        groups.setdefault(key, {})[row["order"]] = row
    notes = []
    for (backbone, size, conv, scope, steps), by_order in groups.items():
        cells = []
        for order, _ in RECOMPUTE_ORDERS:
            row = by_order.get(order)
            if row is None:
                cells += ["", ""]
            elif "seconds_per_step" in row:
                cells += [f"{row['seconds_per_step']:.2f}", f"{row.get('added_memory_mb', float('nan')):.0f}"]
            else:
                notes.append(f"{backbone} {size} px {steps} steps, {order}: {row.get('error', '?')}")
                cells += [f"not run [{len(notes)}]" if row.get("skipped") else f"failed [{len(notes)}]", ""]
        lines.append(f"| {backbone} | {size} | {conv} | {scope} | {steps} | " + " | ".join(cells) + " |")
    lines += [""] + [f"[{index}] {note}" for index, note in enumerate(notes, start=1)] + ([""] if notes else [])
    lines += ["Recomputed inner steps against plain second order (the same meta-gradient) and first order "
              "against second order:", "",
              "| comparison | backbone | px | inner steps | time ratio | memory ratio | target |",
              "|---|---|---|---|---|---|---|"]
    for entry in report.get("ratios", []):
        if entry["comparison"] not in ("recomputed vs second order", "first vs second order"):
            continue
        targets = []
        for kind in ("time", "memory"):
            if f"{kind}_limit" in entry:
                verdict = "met" if entry[f"{kind}_met"] else "**missed**"
                targets.append(f"{kind} <= {entry[f'{kind}_limit']:.2f}: {verdict}")
        ratio = f"{entry['memory_ratio']:.2f}" if "memory_ratio" in entry else ""
        lines.append(f"| {entry['comparison']} | {entry['backbone']} | {entry['image_size']} | "
                     f"{entry.get('inner_steps', '')} | {entry['time_ratio']:.2f} | {ratio} | {'; '.join(targets)} |")
    return lines + [""]


def split_evaluation_section(report: Dict) -> List[str]:
    """benchmarks/evaluation.py with --processes: sequential, batched and split evaluation side by side."""
    settings = report["settings"]
    lines = ["## Evaluation: one process, stacked episodes, episodes split across processes", "",
             f"`{report.get('command')}` on {machine_line(report)}: 5-way, {settings['queries']} queries per class, "
             f"{settings['inner_steps_eval']} inner steps, {settings['image_size']} px, {settings['episodes']} timed "
             f"episodes, {report.get('threads', '?')} torch thread(s) per process; the split column is the episodes "
             "shared by gloo processes as under torchrun, timed from a barrier after every rank's warm-up to the "
             "gathered accuracies.", "",
             "| backbone | conv | shots | sequential episodes/s | stacked (size) episodes/s | stacked / sequential | "
             "processes | split episodes/s | split / sequential | split accuracy difference |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        batched = (row.get("batched") or [{}])[0]
        for split in row.get("processes") or [{}]:
            lines.append(
                f"| {row['backbone']} | {row['conv']} | {row['shots']} | {row['evaluation_episodes_per_second']:.2f} | "
                f"{batched.get('episodes_per_second', float('nan')):.2f} ({batched.get('eval_batch', '-')}) | "
                f"{batched.get('over_sequential', float('nan')):.2f}x | {split.get('world_size', '-')} | "
                f"{split.get('episodes_per_second', float('nan')):.2f} | {split.get('over_sequential', float('nan')):.2f}x | "
                f"{split.get('max_accuracy_difference', float('nan')):.1g} |")
    return lines + [""]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    args = parser.parse_args(argv)
    intro = (ROOT / "benchmarks" / "performance_intro.md").read_text().rstrip() + "\n\n"
    parts = [intro]
    for name, title in (("maml_step.json", "Meta-step: the issue-7 setting"),
                        ("maml_step_paths.json", "Meta-step: ACDC-net with and without the factored path"),
                        ("maml_step_head.json", "Meta-step: head-only adaptation (support features once per task)"),
                        ("maml_step_grid.json", "Meta-step: backbones x conv kinds x scopes x orders, 84 px"),
                        ("maml_step_grid224.json", "Meta-step: backbones x conv kinds x scopes x orders, 224 px"),
                        ("maml_step_gpu.json", "Meta-step on a GPU"),
                        ("maml_step_gpu_vmap.json", "Meta-step on a GPU, tasks batched with torch.func.vmap")):
        report = load(name)
        if report:
            parts.append("\n".join(step_section(title, report)))
    recompute = load("maml_step_recompute.json")
    if recompute:
        parts.append("\n".join(recompute_section(recompute)))
    for name, section in (("maml_phases.json", phases_section), ("saved_tensors.json", saved_tensors_section),
                          ("precision.json", precision_section),
                          ("precision_roles.json", precision_section),
                          ("precision_gpu.json", precision_section)):
        report = load(name)
        if report:
            parts.append("\n".join(section(report)))
    nn_split = load("maml_step_nn_split.json")
    if nn_split:
        parts.append("\n".join(source_trees_section("Meta-step before and after the nn/ split (issue 20)", nn_split)))
    split = load("evaluation_processes.json")
    if split:
        parts.append("\n".join(split_evaluation_section(split)))
    evaluation = load("evaluation.json")
    if evaluation:
        parts.append("\n".join(evaluation_section(evaluation, load("data_throughput.json"))))
    Path(args.out).write_text("\n".join(parts))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
