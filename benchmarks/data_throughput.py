"""Episode loading throughput: episodes/s that fewshot_acdc.data delivers to a training loop.

Measures 5-way 1-shot episodes with 15 and 16 queries per class for
  * builtin (RGB) at 84 px and 224 px, with and without training augmentation,
  * Omniglot at its default 28 px (only when $FEWSHOT_DATA/omniglot is present),
each with num_workers 0 (built in the main process) and 2 (DataLoader workers). The one-time
preparation (generating or decoding a split into the uint8 cache) is timed separately and is
not part of the episodes/s figures. Prints a table and writes JSON (default
benchmarks/results/data_throughput.json).

    python benchmarks/data_throughput.py                 # full run
    python benchmarks/data_throughput.py --episodes 40   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fewshot_acdc.data import create_dataset, episode_loader  # noqa: E402


def measure(dataset, *, queries: int, workers: int, augment: bool, episodes: int, warmup: int) -> dict:
    loader = episode_loader(dataset, ways=5, shots=1, queries=queries, seed=0, episodes=warmup + episodes,
                            num_workers=workers, augment=augment)
    iterator = iter(loader)
    for _ in range(warmup):  # worker start-up and first page-ins are not steady state
        next(iterator)
    start = time.perf_counter()
    count = 0
    for episode in iterator:
        count += 1
    seconds = time.perf_counter() - start
    per_episode = 5 * (1 + queries)
    return {"episodes": count, "seconds": round(seconds, 4),
            "episodes_per_second": round(count / seconds, 2),
            "images_per_second": round(count * per_episode / seconds, 1),
            "episode_shape": list(episode.query_images.shape[1:])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100, help="timed episodes per configuration")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--cache-dir", default=None, help="image cache (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads in the main process (workers always use 1)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "data_throughput.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_at_start = [round(x, 2) for x in os.getloadavg()]  # other processes share the CPUs
    cache_dir = Path(args.cache_dir) if args.cache_dir else Path(tempfile.mkdtemp(prefix="fewshot-bench-"))

    datasets = []  # (label, dataset, augment options)
    for size in (84, 224):
        start = time.perf_counter()
        dataset = create_dataset("builtin", "train", image_size=size, cache_dir=cache_dir)
        datasets.append((f"builtin {size}px", dataset, (False, True), round(time.perf_counter() - start, 2)))
    data_root = os.environ.get("FEWSHOT_DATA")
    if data_root and (Path(data_root) / "omniglot").is_dir():
        start = time.perf_counter()
        dataset = create_dataset("omniglot", "train", root=Path(data_root) / "omniglot", cache_dir=cache_dir)
        datasets.append(("omniglot 28px", dataset, (False,), round(time.perf_counter() - start, 2)))
    else:
        print("FEWSHOT_DATA/omniglot not found: Omniglot skipped", file=sys.stderr)

    rows = []
    for label, dataset, augments, prepare_seconds in datasets:
        for augment in augments:
            for queries in (15, 16):
                for workers in (0, 2):
                    result = measure(dataset, queries=queries, workers=workers, augment=augment,
                                     episodes=args.episodes, warmup=args.warmup)
                    row = {"dataset": label, "classes": dataset.num_classes, "images": len(dataset),
                           "prepare_seconds_first_run": prepare_seconds, "ways": 5, "shots": 1,
                           "queries": queries, "augment": augment, "num_workers": workers, **result}
                    rows.append(row)
                    print(f"{label:15s} aug={str(augment):5s} q={queries} workers={workers}: "
                          f"{row['episodes_per_second']:8.1f} episodes/s  {row['images_per_second']:9.0f} images/s",
                          flush=True)

    print()
    header = f"{'dataset':15s} {'augment':>7s} {'queries':>7s} {'workers':>7s} {'episodes/s':>11s} {'images/s':>9s}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['dataset']:15s} {str(row['augment']):>7s} {row['queries']:7d} {row['num_workers']:7d} "
              f"{row['episodes_per_second']:11.1f} {row['images_per_second']:9.0f}")
    record = {
        "benchmark": "data_throughput",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "numpy": np.__version__, "main_process_torch_threads": args.threads,
                    "load_average_at_start": load_at_start,
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "timed_episodes_per_config": args.episodes,
        "note": ("prepare_seconds_first_run: generating/decoding the split into the uint8 cache, "
                 "0 when already cached; excluded from episodes/s. num_workers > 0 only pays off "
                 "when the machine has cores to spare beyond the training process."),
        "results": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
