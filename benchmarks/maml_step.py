"""Time per MAML meta-step and peak memory: this engine vs learn2learn vs higher.

    python benchmarks/maml_step.py                       # the full grid (slow on a CPU)
    python benchmarks/maml_step.py --backbones resnet10 --repeats 1 --meta-batch 2   # reduced

Grid: backbone x conv kind x inner-loop scope x first/second order x implementation, all on the
same model (same seed) and the same random episodes (5-way 1-shot, 84 px, 15 queries per
class by default), meta-batch of 4 tasks, 5 inner steps, outer Adam. Each configuration runs in
a fresh subprocess so that its peak memory is its own:

* CUDA: ``torch.cuda.max_memory_allocated`` (bytes held by tensors at the peak);
* CPU: ``ru_maxrss`` of the subprocess (peak resident set, includes the interpreter and torch,
  about 300-400 MB on its own; ``baseline_rss_mb`` is the resident set just before the first
  meta-step, so ``peak - baseline`` is what the meta-steps added).

Times are the median over ``--repeats`` timed meta-steps after one warm-up step. On a shared
CPU they are noisy: compare ratios measured in the same run. Results: a table on stdout and
JSON in ``benchmarks/results/maml_step.json``.
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "maml_step.json")
IMPLEMENTATIONS = ("engine", "learn2learn", "higher")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default="resnet10,resnet18", help="comma-separated (resnet34 too)")
    parser.add_argument("--convs", default="standard,acdc-net")
    parser.add_argument("--scopes", default="all,atoms")
    parser.add_argument("--orders", default="second,first")
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--inner-steps", type=int, default=5)
    parser.add_argument("--inner-lr", type=float, default=0.01)
    parser.add_argument("--task-batching", default="sequential", help="engine only: sequential or vmap")
    parser.add_argument("--repeats", type=int, default=2, help="timed meta-steps after one warm-up")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads per configuration (0: torch's default). On a shared CPU, 1 "
                             "avoids threads spinning at barriers while a peer is descheduled")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration")
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one configuration, JSON, in a subprocess
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- worker side
def make_episodes(config: Dict, torch, device):
    from fewshot_acdc.meta import Episode
    generator = torch.Generator().manual_seed(1234)
    ways, size = config["ways"], config["image_size"]
    episodes = []
    for _ in range(config["meta_batch"]):
        sets = []
        for per_class in (config["shots"], config["queries"]):
            labels = torch.arange(ways).repeat_interleave(per_class)
            images = torch.randn(labels.numel(), 3, size, size, generator=generator)
            sets += [images.to(device), labels.to(device)]
        episodes.append(Episode(*sets))
    return episodes


def engine_step(config, model, episodes, optimizer):
    from fewshot_acdc.meta import MAML
    maml = MAML(model, scope=config["scope"], inner_lr=config["inner_lr"], inner_steps=config["inner_steps"],
                first_order=config["order"] == "first", task_batching=config["task_batching"])
    return lambda: maml.meta_train_step(episodes, optimizer)


def reference_step(name):
    """An optimizer step on the meta-gradient of learn2learn or higher (fewshot_acdc.meta.references:
    the very computation the agreement tests check against the engine)."""
    def build(config, model, episodes, optimizer):
        from fewshot_acdc.meta import adapted_parameter_names
        from fewshot_acdc.meta.references import REFERENCE_META_GRADIENTS
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
    sys.path.insert(0, ROOT)
    from fewshot_acdc.models import create_backbone
    device = torch.device(config["device"])
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    torch.manual_seed(0)
    model = create_backbone(config["backbone"], config["conv"], num_classes=config["ways"],
                            image_size=config["image_size"], track_running_stats=False).to(device)
    episodes = make_episodes(config, torch, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = STEP_BUILDERS[config["implementation"]](config, model, episodes, optimizer)

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    baseline = rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step()  # warm-up (allocator, lazy imports, kernels)
    synchronize()
    times = []
    for _ in range(config["repeats"]):
        start = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - start)
    result = {"seconds_per_step": statistics.median(times), "seconds_all": times,
              "parameters": sum(p.numel() for p in model.parameters())}
    if device.type == "cuda":
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        result["baseline_rss_mb"] = baseline
    return result


# ----------------------------------------------------------------------------- driver side
def resolve_device(name: str) -> str:
    if name != "auto":
        return name
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_configuration(config: Dict, timeout: float) -> Dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(config)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {completed.returncode}: {' | '.join(tail)}"}
    return json.loads(lines[-1])


def format_table(rows: List[Dict], implementations: List[str], device: str) -> str:
    memory = "peak alloc MB" if device == "cuda" else "peak RSS MB (+added)"
    header = f"{'backbone':<9} {'conv':<9} {'scope':<6} {'order':<6} |"
    for name in implementations:
        header += f" {name + ' s/step':>17} {memory:>21} |"
    lines = [header, "-" * len(header)]
    groups = {}
    for row in rows:
        groups.setdefault((row["backbone"], row["conv"], row["scope"], row["order"]), {})[row["implementation"]] = row
    for (backbone, conv, scope, order), by_impl in groups.items():
        line = f"{backbone:<9} {conv:<9} {scope:<6} {order:<6} |"
        for name in implementations:
            row = by_impl.get(name, {})
            if "seconds_per_step" in row:
                added = (f" (+{row['peak_memory_mb'] - row['baseline_rss_mb']:.0f})"
                         if "baseline_rss_mb" in row else "")
                peak = f"{row['peak_memory_mb']:.0f}{added}"
                line += f" {row['seconds_per_step']:>17.2f} {peak:>21} |"
            else:
                line += f" {row.get('error', 'skipped')[:39]:>39} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0
    device = resolve_device(args.device)
    implementations = args.implementations.split(",")
    unknown = set(implementations) - set(IMPLEMENTATIONS)
    if unknown:
        raise SystemExit(f"unknown implementations {sorted(unknown)}; accepted: {', '.join(IMPLEMENTATIONS)}")
    common = {"image_size": args.image_size, "ways": args.ways, "shots": args.shots, "queries": args.queries,
              "meta_batch": args.meta_batch, "inner_steps": args.inner_steps, "inner_lr": args.inner_lr,
              "task_batching": args.task_batching, "repeats": args.repeats, "device": device,
              "threads": args.threads}
    rows = []
    started = time.time()
    load_at_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    grid = itertools.product(args.backbones.split(","), args.convs.split(","), args.scopes.split(","),
                             args.orders.split(","), implementations)
    for backbone, conv, scope, order, implementation in grid:
        if scope != "all" and conv == "standard":
            continue  # atoms scope needs an ACDC backbone
        config = {"backbone": backbone, "conv": conv, "scope": scope, "order": order,
                  "implementation": implementation, **common}
        result = run_configuration(config, args.timeout)
        rows.append({**config, **result})
        shown = (f"{result['seconds_per_step']:.2f} s/step, peak {result['peak_memory_mb']:.0f} MB"
                 if "seconds_per_step" in result else result["error"])
        print(f"[{time.time() - started:6.0f} s] {backbone} {conv} {scope} {order} {implementation}: {shown}",
              flush=True)
    import torch
    report = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "load_average_at_start": load_at_start,
        "settings": {key: value for key, value in common.items()},
        "total_seconds": time.time() - started,
        "rows": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1)
    print(format_table(rows, implementations, device))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
