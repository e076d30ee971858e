"""Evaluation throughput (episodes/s) next to the episode loader's, in one run.

    python benchmarks/evaluation.py                     # ResNet18, standard vs acdc-net, 84 px
    python benchmarks/evaluation.py --backbones resnet10,resnet18 --convs standard,acdc-net,acdc-block

Evaluation is what ``evaluate.py`` does per test episode (:meth:`MAML.evaluate_episode`):
adapt ``--inner-steps-eval`` steps from the meta-parameters without a second-order graph, then
score the query set under ``no_grad``. Episodes come from the built-in dataset through
:func:`fewshot_acdc.data.episode_loader` (the real loader, not random tensors), so the script
also times the loader alone on the same split and settings and reports
``loader_headroom = loader episodes/s / evaluation episodes/s``: above 1 the loader keeps up with
evaluation in the main process (no workers). Saves JSON to benchmarks/results/evaluation.json.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import created_now, save_report  # noqa: E402
from fewshot_acdc.data import create_dataset, episode_loader  # noqa: E402
from fewshot_acdc.meta import MAML  # noqa: E402
from fewshot_acdc.models import create_backbone  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default="resnet18")
    parser.add_argument("--convs", default="standard,acdc-net")
    parser.add_argument("--scopes", default="all,atoms")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--inner-steps-eval", type=int, default=5)
    parser.add_argument("--inner-lr", type=float, default=0.01)
    parser.add_argument("--episodes", type=int, default=20, help="timed episodes per configuration")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "evaluation.json"))
    return parser.parse_args(argv)


def loader_rate(dataset, shots: int, queries: int, episodes: int) -> float:
    loader = episode_loader(dataset, ways=5, shots=shots, queries=queries, seed=0, episodes=episodes + 2)
    iterator = iter(loader)
    next(iterator), next(iterator)
    start = time.perf_counter()
    for _ in range(episodes):
        next(iterator)
    return episodes / (time.perf_counter() - start)


def evaluation_rate(model, scope: str, dataset, shots: int, args) -> float:
    maml = MAML(model, scope=scope, inner_lr=args.inner_lr, inner_steps_eval=args.inner_steps_eval)
    loader = episode_loader(dataset, ways=5, shots=shots, queries=args.queries, seed=1, episodes=args.episodes + 1)
    iterator = iter(loader)
    maml.evaluate_episode(next(iterator))  # warm-up
    start = time.perf_counter()
    for episode in iterator:
        maml.evaluate_episode(episode)
    return args.episodes / (time.perf_counter() - start)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    dataset = create_dataset("builtin", split="test", image_size=args.image_size)
    started = time.time()
    rows = []
    shots_list = [int(shots) for shots in args.shots.split(",")]
    loader = {shots: loader_rate(dataset, shots, args.queries, max(args.episodes, 50)) for shots in shots_list}
    for backbone in args.backbones.split(","):
        for conv in args.convs.split(","):
            torch.manual_seed(0)
            model = create_backbone(backbone, conv, num_classes=5, image_size=args.image_size,
                                    track_running_stats=False)
            for scope in args.scopes.split(","):
                if scope != "all" and conv == "standard":
                    continue
                for shots in shots_list:
                    rate = evaluation_rate(model, scope, dataset, shots, args)
                    row = {"backbone": backbone, "conv": conv, "scope": scope, "shots": shots,
                           "image_size": args.image_size, "evaluation_episodes_per_second": rate,
                           "seconds_for_600_episodes": 600 / rate,
                           "loader_episodes_per_second": loader[shots], "loader_headroom": loader[shots] / rate}
                    rows.append(row)
                    print(f"[{time.time() - started:5.0f} s] {backbone} {conv} {scope} {shots}-shot: "
                          f"{rate:.2f} episodes/s evaluated (600 in {600 / rate:.0f} s), loader "
                          f"{loader[shots]:.0f} episodes/s ({loader[shots] / rate:.0f}x headroom)", flush=True)
    report = {
        "created": created_now(),
        "command": "python benchmarks/evaluation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": "cpu", "device_name": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "threads": args.threads,
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "settings": {"ways": 5, "queries": args.queries, "inner_steps_eval": args.inner_steps_eval,
                     "inner_lr": args.inner_lr, "episodes": args.episodes, "image_size": args.image_size},
        "rows": rows,
    }
    save_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
