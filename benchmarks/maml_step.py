"""Time per MAML meta-step and peak memory: conv kinds, scopes, this engine vs learn2learn vs higher.

    python benchmarks/maml_step.py                       # ResNet18, the issue-7 setting
    python benchmarks/maml_step.py --backbones resnet10,resnet18,resnet34 --convs standard,acdc-net,acdc-block \
        --image-sizes 84,224 --implementations engine --meta-batch 1     # the wide grid
    python benchmarks/maml_step.py --implementations engine --source-trees before=../before,after=.
                                                         # the same grid on two checkouts, side by side
    python benchmarks/maml_step.py --backbones resnet18,resnet34 --convs acdc-net --scopes all \
        --orders second,second-recompute,first --image-sizes 84,224 --inner-steps 5,10 --queries 1 \
        --implementations engine --meta-batch 1 --rounds 1 --warmup 0 --memory-cap-mb 6144 \
        --out benchmarks/results/maml_step_recompute.json      # second order in bounded memory
    python benchmarks/report.py                          # docs/performance.md from the saved JSON

Grid: backbone x conv kind x inner-loop scope x order x image size x inner steps x
implementation, all on the same model (same seed) and the same random episodes (5-way 1-shot, 15
queries per class, 5 inner steps, outer Adam; meta-batch 4 by default). The orders are ``second``,
``first`` and ``second-recompute`` (second order with ``MAML(recompute_inner_steps=True)``: each
inner step recomputed in the backward pass; this engine only). Each configuration runs in a fresh
subprocess so that its peak memory is its own:

* CUDA: ``torch.cuda.max_memory_allocated`` (bytes held by tensors at the peak);
* CPU: ``ru_maxrss`` of a subprocess. ``baseline_rss_mb`` is the resident set just before the
  first meta-step (interpreter, torch, model, episodes); ``added_memory_mb = peak - baseline`` is
  what the meta-steps themselves needed, the figure the memory ratios compare. With
  ``--cpu-memory live`` (default) it comes from a second subprocess that runs the same steps with
  glibc's malloc told to hand every freed block of 64 KiB or more back to the system at once
  (``MALLOC_MMAP_THRESHOLD_``), so its peak RSS follows the peak of live tensors, as CUDA's
  ``max_memory_allocated`` does; it repeats to a few MB. That allocator is slow (a page fault per
  touched page), so times always come from the timing subprocess under the default allocator, whose
  own peak is kept as ``rss_added_memory_mb``: what ``top`` shows, but the allocator's caching makes it
  vary by about 5% between identical runs, too much for a ratio near 1 (``--cpu-memory rss``
  compares that instead).

The grid runs ``--rounds`` times, one subprocess per configuration per round, configurations
interleaved, so a slow spell of a shared machine hits every configuration rather than one; a
configuration's time is the median over its rounds of the median over ``--repeats`` timed
meta-steps (after one warm-up step). Sequential task batching keeps one task's graph alive, so
time grows linearly with the meta-batch and memory does not: ratios from ``--meta-batch 1``
hold for 4. Ratios against the issue-7 targets (ACDC vs standard, atoms vs all, engine vs the
references) are computed from the medians and saved with the rows in
``benchmarks/results/maml_step.json`` (``--out``).

``--memory-cap-mb`` keeps every configuration's process within that much memory on a shared
machine: the process's data segment is limited to it (``RLIMIT_DATA``: an allocation beyond fails
and the configuration is recorded as over the cap), and a configuration whose peak, extrapolated
from the same configuration with fewer inner steps in this round (memory in proportion to the
steps), would pass the cap is not started at all, with that reason recorded.

``--source-trees LABEL=PATH,...`` adds one more axis: each configuration is timed once per
checkout of this repository, its worker importing ``fewshot_acdc`` from that checkout (the
recorded ``source_trees`` name each one's commit), interleaved as the rounds are, so a change's
cost is a ratio measured in one run: ``source ratios`` divide every tree's time and memory by the
first tree's on the same configuration.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# --source-trees: a worker imports the package it times from another checkout of this repository
# (the code before a change), named by this variable; the driver and every other worker use ROOT.
SOURCE_TREE_VARIABLE = "FEWSHOT_ACDC_SOURCE_TREE"
sys.path.insert(0, os.environ.get(SOURCE_TREE_VARIABLE) or ROOT)

from benchmarks.common import configuration_grid, created_now, random_episode, revision_at_start, save_report, source_revision  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "maml_step.json")
IMPLEMENTATIONS = ("engine", "learn2learn", "higher")
ORDERS = ("second", "second-recompute", "first")
ENGINE_ONLY_ORDERS = ("second-recompute",)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default="resnet18", help="comma-separated: resnet10,resnet18,resnet34")
    parser.add_argument("--convs", default="standard,acdc-net",
                        help="conv kinds; 'acdc-net:kernel' forces the composed-kernel path in every ACDC layer")
    parser.add_argument("--scopes", default="all,atoms")
    parser.add_argument("--orders", default="second,first",
                        help="comma-separated: second, first, second-recompute (engine only: inner steps "
                             "recomputed in the backward pass)")
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--image-sizes", default="84", help="comma-separated, e.g. 84,224")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--inner-steps", default="5", help="comma-separated, e.g. 5,10")
    parser.add_argument("--inner-lr", type=float, default=0.01)
    parser.add_argument("--task-batching", default="sequential", help="engine only: sequential or vmap")
    parser.add_argument("--repeats", type=int, default=1, help="timed meta-steps after the warm-up")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed meta-steps first (allocator, lazy imports; 0 for steps of many seconds)")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the grid (interleaved)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads per configuration (0: torch's default). On a shared CPU, 1 "
                             "avoids threads spinning at barriers while a peer is descheduled")
    parser.add_argument("--cpu-memory", choices=("live", "rss"), default="live",
                        help="live: peak of live tensors (a second subprocess per configuration, malloc returning "
                             "freed blocks at once); rss: peak RSS of the timing run under the default allocator")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration")
    parser.add_argument("--memory-cap-mb", type=float, default=0.0,
                        help="CPU: most memory a configuration's process may take (RLIMIT_DATA; configurations "
                             "predicted to pass it are skipped); 0: no cap")
    parser.add_argument("--source-trees", default="",
                        help="LABEL=PATH,...: time every configuration on each checkout (e.g. before=../old,after=.); "
                             "ratios against the first")
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one configuration, JSON, in a subprocess
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- worker side
def make_episodes(config: Dict, torch, device):
    generator = torch.Generator().manual_seed(1234)
    return [random_episode(generator, config["image_size"], config["ways"], config["shots"], config["queries"], device)
            for _ in range(config["meta_batch"])]


def engine_step(config, model, episodes, optimizer):
    from fewshot_acdc.meta import MAML
    maml = MAML(model, scope=config["scope"], inner_lr=config["inner_lr"], inner_steps=config["inner_steps"],
                first_order=config["order"] == "first", task_batching=config["task_batching"],
                recompute_inner_steps=config["order"] == "second-recompute")
    return lambda: maml.meta_train_step(episodes, optimizer)


def reference_step(name):
    """An optimizer step on the meta-gradient of learn2learn or higher (fewshot_acdc.meta.references:
    the very computation the agreement tests check against the engine)."""
    def build(config, model, episodes, optimizer):
        from fewshot_acdc.meta import adapted_parameter_names
        from fewshot_acdc.meta.references import REFERENCE_META_GRADIENTS
        from fewshot_acdc.meta.references import import_quietly
        import_quietly(name)  # before the memory baseline: the library's own imports are not the step's
        meta_gradient = REFERENCE_META_GRADIENTS[name]
        adapted = adapted_parameter_names(model, config["scope"])

        def step():
            meta_gradient(model, episodes, adapted, config["inner_lr"], config["inner_steps"],
                          config["order"] == "first")
            optimizer.step()
        return step
    return build


STEP_BUILDERS = {"engine": engine_step, "learn2learn": reference_step("learn2learn"),
                 "higher": reference_step("higher")}


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_worker(config: Dict) -> Dict:
    import torch
    from fewshot_acdc.models import create_backbone
    device = torch.device(config["device"])
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    torch.manual_seed(0)
    # "acdc-net:kernel" = ACDC-net with every layer on the composed-kernel path (no factored path).
    conv, _, compute = config["conv"].partition(":")
    model = create_backbone(config["backbone"], conv, num_classes=config["ways"],
                            image_size=config["image_size"], track_running_stats=False).to(device)
    for module in model.modules():
        if compute and hasattr(module, "compute"):
            module.compute = compute
    episodes = make_episodes(config, torch, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = STEP_BUILDERS[config["implementation"]](config, model, episodes, optimizer)

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    baseline = rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        baseline_allocated = torch.cuda.memory_allocated() / 2**20
    for _ in range(config.get("warmup", 1)):  # warm-up (allocator, lazy imports, kernels)
        step()
    synchronize()
    times = []
    # The timed steps are steady state: gradients and the optimizer's state (Adam: two tensors per
    # parameter, created by the warm-up step) exist; a memory run (--cpu-memory) takes the same steps.
    for _ in range(config["repeats"]):
        start = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - start)
    import fewshot_acdc
    result = {"seconds_per_step": statistics.median(times), "seconds_all": times,
              "parameters": sum(p.numel() for p in model.parameters()),
              "package": os.path.dirname(os.path.dirname(os.path.abspath(fewshot_acdc.__file__)))}
    if device.type == "cuda":
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["added_memory_mb"] = result["peak_memory_mb"] - baseline_allocated
    else:
        result["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        result["baseline_rss_mb"] = baseline
        result["added_memory_mb"] = result["peak_memory_mb"] - baseline
    return result


# ----------------------------------------------------------------------------- driver side
def resolve_device(name: str) -> str:
    if name != "auto":
        return name
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


# glibc malloc: every block of 64 KiB or more is its own mapping, unmapped when freed, and the heap
# is trimmed at once, so the resident set tracks the bytes that are alive.
LIVE_MEMORY_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0", "MALLOC_TOP_PAD_": "0"}


def run_configuration(config: Dict, timeout: float) -> Dict:
    """Time (and memory) of one configuration, each measured in its own subprocess."""
    result = run_worker_process(config, timeout)
    if config["device"] != "cpu" or config.get("cpu_memory", "live") != "live" or "error" in result:
        return result
    memory = run_worker_process({**config, "measure": "memory"}, timeout, LIVE_MEMORY_ENVIRONMENT)
    if "error" in memory:
        return {"error": f"memory run: {memory['error']}", **({"skipped": True} if memory.get("skipped") else {})}
    result["rss_added_memory_mb"] = result["added_memory_mb"]
    for field in ("peak_memory_mb", "added_memory_mb", "baseline_rss_mb"):
        result[field] = memory[field]
    return result


def memory_limit(cap_mb: float):
    """A ``preexec_fn`` that limits the child's data segment (heap and private mappings: every
    tensor's memory) to ``cap_mb``; ``None`` without a cap."""
    if not cap_mb:
        return None
    limit = int(cap_mb * 2**20)

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    return apply


OUT_OF_MEMORY = ("can't allocate memory", "MemoryError", "Cannot allocate memory")


def run_worker_process(config: Dict, timeout: float, environment: Optional[Dict[str, str]] = None) -> Dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(config)]
    environment = dict(environment or {})
    if config.get("source_path"):
        environment[SOURCE_TREE_VARIABLE] = config["source_path"]
    cap = config.get("memory_cap_mb") if config.get("device") == "cpu" else None
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                                   env={**os.environ, **environment}, preexec_fn=memory_limit(cap))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
        if cap and any(marker in (completed.stderr or "") for marker in OUT_OF_MEMORY):
            return {"error": f"over the memory cap of {cap:.0f} MB (an allocation failed under RLIMIT_DATA)",
                    "skipped": True}
        return {"error": f"exit {completed.returncode}: {' | '.join(tail)}"}
    return json.loads(lines[-1])


def predicted_peak_mb(config: Dict, measured: List[Dict]) -> Optional[Dict]:
    """The peak memory ``config`` would reach, extrapolated from the measured row of the same
    configuration with the most inner steps below its own (memory in proportion to the inner steps:
    an upper bound for recomputed steps and first order, which keep less per step); ``None`` when
    no such row was measured."""
    same = [row for row in measured if "added_memory_mb" in row and row["inner_steps"] < config["inner_steps"]
            and all(row.get(field) == config.get(field) for field in ROW_FIELDS if field != "inner_steps")]
    if not same:
        return None
    base = max(same, key=lambda row: row["inner_steps"])
    added = base["added_memory_mb"] * config["inner_steps"] / base["inner_steps"]
    return {"peak_mb": base["baseline_rss_mb"] + added, "from_steps": base["inner_steps"],
            "from_added_mb": base["added_memory_mb"]}


KEY_FIELDS = ("backbone", "conv", "scope", "order", "image_size", "inner_steps")
# A row is one configuration on one checkout (``source``: "" without --source-trees).
ROW_FIELDS = KEY_FIELDS + ("implementation", "source")

# The issue-7 targets: (name, what is compared, numerator selector, denominator selector, time and
# memory limits). A selector fixes some fields of a row; the others (backbone, order, size, and
# conv or scope where not fixed) are matched between numerator and denominator.
TARGETS = (
    ("acdc-net vs standard", {"conv": "acdc-net", "scope": "all", "implementation": "engine"},
     {"conv": "standard", "scope": "all", "implementation": "engine"}, 1.0, 1.0),
    ("acdc-block vs standard", {"conv": "acdc-block", "scope": "all", "implementation": "engine"},
     {"conv": "standard", "scope": "all", "implementation": "engine"}, None, None),
    ("kernel path vs standard", {"conv": "acdc-net:kernel", "scope": "all", "implementation": "engine"},
     {"conv": "standard", "scope": "all", "implementation": "engine"}, None, None),
    ("atoms vs all", {"scope": "atoms", "implementation": "engine"},
     {"scope": "all", "implementation": "engine"}, 0.75, 0.7),
    ("engine vs learn2learn", {"implementation": "engine"}, {"implementation": "learn2learn"}, 1 / 1.3, None),
    ("engine vs higher", {"implementation": "engine"}, {"implementation": "higher"}, 1 / 1.3, None),
    # Issue 34: second order with recomputed inner steps against the plain second order it equals.
    ("recomputed vs second order", {"order": "second-recompute", "implementation": "engine"},
     {"order": "second", "implementation": "engine"}, 1.5, 0.5),
    ("first vs second order", {"order": "first", "implementation": "engine"},
     {"order": "second", "implementation": "engine"}, None, None),
)


RESULT_FIELDS = ("seconds_per_step", "seconds_all", "peak_memory_mb", "added_memory_mb", "baseline_rss_mb",
                 "rss_added_memory_mb", "parameters", "package", "error", "skipped")


def aggregate(rounds: List[List[Dict]]) -> List[Dict]:
    """One row per configuration: median time and memory over the rounds that succeeded."""
    by_config: Dict[tuple, List[Dict]] = {}
    order = []
    for round_rows in rounds:
        for row in round_rows:
            key = tuple(row.get(field, "") for field in ROW_FIELDS)
            if key not in by_config:
                order.append(key)
            by_config.setdefault(key, []).append(row)
    rows = []
    for key in order:
        runs = by_config[key]
        good = [run for run in runs if "seconds_per_step" in run]
        row = {field: runs[0][field] for field in runs[0] if field not in RESULT_FIELDS}
        if good:
            row["seconds_per_step"] = statistics.median(run["seconds_per_step"] for run in good)
            row["seconds_by_round"] = [run["seconds_per_step"] for run in good]
            for field in ("peak_memory_mb", "added_memory_mb", "baseline_rss_mb", "rss_added_memory_mb"):
                if field in good[0]:
                    row[field] = statistics.median(run[field] for run in good)
            row["parameters"] = good[0]["parameters"]
            if "package" in good[0]:
                row["package"] = good[0]["package"]
        else:
            row["error"] = runs[-1].get("error", "failed")
            if runs[-1].get("skipped"):
                row["skipped"] = True
        rows.append(row)
    return rows


def _matches(row: Dict, selector: Dict) -> bool:
    return all(row.get(field) == value for field, value in selector.items())


def compute_ratios(rows: List[Dict]) -> List[Dict]:
    """Every numerator/denominator pair the targets name, with the ratio of time and of the memory
    the meta-steps added, and whether each limit is met."""
    ratios = []
    timed = [row for row in rows if "seconds_per_step" in row]
    for name, top, bottom, time_limit, memory_limit in TARGETS:
        free = [field for field in ROW_FIELDS if field not in top or field not in bottom]
        for numerator in (row for row in timed if _matches(row, top)):
            for denominator in (row for row in timed if _matches(row, bottom)):
                if any(numerator.get(field, "") != denominator.get(field, "") for field in free):
                    continue
                entry = {"comparison": name,
                         **{field: numerator[field] for field in KEY_FIELDS if field in numerator}}
                if numerator.get("source"):
                    entry["source"] = numerator["source"]
                if "scope" in top:
                    entry["scope"] = f"{top['scope']} / {bottom['scope']}"
                if "conv" in top and "conv" in bottom:
                    entry["conv"] = f"{top['conv']} / {bottom['conv']}"
                if "order" in top and "order" in bottom:
                    entry["order"] = f"{top['order']} / {bottom['order']}"
                entry["time_ratio"] = numerator["seconds_per_step"] / denominator["seconds_per_step"]
                if numerator.get("added_memory_mb") and denominator.get("added_memory_mb"):
                    entry["memory_ratio"] = numerator["added_memory_mb"] / denominator["added_memory_mb"]
                if time_limit is not None:
                    entry["time_limit"] = time_limit
                    entry["time_met"] = entry["time_ratio"] <= time_limit
                if memory_limit is not None and "memory_ratio" in entry:
                    entry["memory_limit"] = memory_limit
                    entry["memory_met"] = entry["memory_ratio"] <= memory_limit
                ratios.append(entry)
    return ratios


def compute_source_ratios(rows: List[Dict]) -> List[Dict]:
    """Each checkout's time and added memory over the first checkout's, per configuration (the
    cost of a change, measured in one run); empty without --source-trees."""
    timed = [row for row in rows if "seconds_per_step" in row and row.get("source")]
    first = {}
    for row in timed:
        first.setdefault(tuple(row.get(field) for field in KEY_FIELDS + ("implementation",)), row)
    ratios = []
    for row in timed:
        base = first[tuple(row.get(field) for field in KEY_FIELDS + ("implementation",))]
        if row is base:
            continue
        entry = {"source": f"{row['source']} / {base['source']}",
                 **{field: row[field] for field in KEY_FIELDS + ("implementation",) if field in row},
                 "time_ratio": row["seconds_per_step"] / base["seconds_per_step"]}
        if row.get("added_memory_mb") and base.get("added_memory_mb"):
            entry["memory_ratio"] = row["added_memory_mb"] / base["added_memory_mb"]
        ratios.append(entry)
    return ratios


def parse_source_trees(text: str) -> List[Dict[str, str]]:
    """``before=../old,after=.`` -> [{"label": "before", "path": <absolute>}, ...]; SystemExit
    naming a malformed entry or a path that is not a checkout of this package."""
    trees = []
    for item in filter(None, text.split(",")):
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"--source-trees: {item!r} is not LABEL=PATH")
        path = os.path.abspath(path)
        if not os.path.isfile(os.path.join(path, "fewshot_acdc", "__init__.py")):
            raise SystemExit(f"--source-trees: {path} holds no fewshot_acdc package (give a checkout of this "
                             "repository, e.g. git worktree add ../before <commit>)")
        if any(tree["label"] == label for tree in trees):
            raise SystemExit(f"--source-trees: label {label!r} is given twice")
        trees.append({"label": label, "path": path})
    return trees


def format_table(rows: List[Dict], implementations: List[str], device: str) -> str:
    memory = "peak alloc MB" if device == "cuda" else "RSS added MB"
    header = f"{'backbone':<9} {'px':>4} {'conv':<10} {'scope':<6} {'order':<6} {'steps':>3} |"
    for name in implementations:
        header += f" {name + ' s/step':>18} {memory:>13} |"
    lines = [header, "-" * len(header)]
    groups: Dict[tuple, Dict[str, Dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(field, "") for field in KEY_FIELDS + ("source",)), {})[row["implementation"]] = row
    for (backbone, conv, scope, order, size, steps, source), by_impl in groups.items():
        line = (f"{backbone:<9} {size:>4} {conv:<10} {scope:<6} {order:<6} {steps:>3} |"
                + (f" {source:<8} |" if source else ""))
        for name in implementations:
            row = by_impl.get(name, {})
            if "seconds_per_step" in row:
                line += f" {row['seconds_per_step']:>18.2f} {row.get('added_memory_mb', float('nan')):>13.0f} |"
            else:
                line += f" {row.get('error', 'skipped')[:32]:>32} |"
        lines.append(line)
    return "\n".join(lines)


def format_ratios(ratios: List[Dict]) -> str:
    lines = []
    for entry in ratios:
        verdicts = []
        for kind in ("time", "memory"):
            if f"{kind}_limit" in entry:
                verdicts.append(f"{kind} {'met' if entry[f'{kind}_met'] else 'MISSED'} (<= {entry[f'{kind}_limit']:.2f})")
        memory = f"{entry['memory_ratio']:.2f}x" if "memory_ratio" in entry else "-"
        lines.append(f"{entry['comparison']:<24} {entry['backbone']:<9} {entry['image_size']:>4}px "
                     f"{entry['conv']:<21} {entry['scope']:<12} {entry['order']:<6} {entry.get('inner_steps', '')} "
                     f"steps time {entry['time_ratio']:.2f}x memory {memory}  {'; '.join(verdicts)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0
    revision_at_start()  # the code measured is the code now, whatever is committed meanwhile
    device = resolve_device(args.device)
    implementations = args.implementations.split(",")
    unknown = set(implementations) - set(IMPLEMENTATIONS)
    if unknown:
        raise SystemExit(f"unknown implementations {sorted(unknown)}; accepted: {', '.join(IMPLEMENTATIONS)}")
    unknown = set(args.orders.split(",")) - set(ORDERS)
    if unknown:
        raise SystemExit(f"unknown orders {sorted(unknown)}; accepted: {', '.join(ORDERS)}")
    common = {"ways": args.ways, "shots": args.shots, "queries": args.queries,
              "meta_batch": args.meta_batch, "inner_lr": args.inner_lr,
              "task_batching": args.task_batching, "repeats": args.repeats, "warmup": args.warmup, "device": device,
              "threads": args.threads, "cpu_memory": args.cpu_memory, "memory_cap_mb": args.memory_cap_mb}
    trees = parse_source_trees(args.source_trees)
    grid = []
    # Inner steps vary fastest: a configuration's peak is predicted from its fewer-step run (--memory-cap-mb).
    for backbone, size, conv, scope, order, implementation, steps in configuration_grid(
            args.backbones, args.image_sizes, args.convs, args.scopes, args.orders, implementations,
            sorted(args.inner_steps.split(","), key=int), conv_axis=2, scope_axis=3):
        if order in ENGINE_ONLY_ORDERS and implementation != "engine":
            continue
        config = {"backbone": backbone, "conv": conv, "scope": scope, "order": order, "image_size": int(size),
                  "inner_steps": int(steps), "implementation": implementation, **common}
        grid += [{**config, "source": tree["label"], "source_path": tree["path"]} for tree in trees] or [config]
    started = time.time()
    load_at_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    rounds = []
    for round_index in range(args.rounds):
        round_rows = []
        for config in grid:
            prediction = predicted_peak_mb(config, round_rows) if device == "cpu" and args.memory_cap_mb else None
            if prediction is not None and prediction["peak_mb"] > args.memory_cap_mb:
                result = {"error": f"not run: predicted peak {prediction['peak_mb']:.0f} MB (the "
                                   f"{prediction['from_steps']}-step run added {prediction['from_added_mb']:.0f} MB) "
                                   f"is over the memory cap of {args.memory_cap_mb:.0f} MB", "skipped": True}
            else:
                result = run_configuration(config, args.timeout)
            round_rows.append({**config, **result})
            shown = (f"{result['seconds_per_step']:.2f} s/step, +{result.get('added_memory_mb', 0):.0f} MB"
                     if "seconds_per_step" in result else result["error"])
            print(f"[{time.time() - started:6.0f} s] round {round_index + 1}/{args.rounds} {config['backbone']} "
                  f"{config['image_size']}px {config['conv']} {config['scope']} {config['order']} "
                  f"{config['inner_steps']} steps "
                  f"{config['implementation']}{' ' + config['source'] if config.get('source') else ''}: {shown}",
                  flush=True)
        rounds.append(round_rows)
    rows = aggregate(rounds)
    ratios = compute_ratios(rows)
    source_ratios = compute_source_ratios(rows)
    import torch
    report = {
        "created": created_now(),
        "command": "python benchmarks/maml_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "settings": {**common, "inner_steps": args.inner_steps if "," in args.inner_steps else int(args.inner_steps),
                     "rounds": args.rounds},
        "total_seconds": time.time() - started,
        "rows": rows,
        "ratios": ratios,
    }
    if trees:
        report["source_trees"] = [{**tree, **source_revision(tree["path"])} for tree in trees]
        report["source_ratios"] = source_ratios
    print(format_table(rows, implementations, device))
    print(format_ratios(ratios))
    for entry in source_ratios:
        memory = f"{entry['memory_ratio']:.2f}x" if "memory_ratio" in entry else "-"
        print(f"{entry['source']:<16} {entry['backbone']:<9} {entry['image_size']:>4}px {entry['conv']:<10} "
              f"{entry['scope']:<6} {entry['order']:<6} {entry['implementation']:<11} time {entry['time_ratio']:.2f}x "
              f"memory {memory}")
    save_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
