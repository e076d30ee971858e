"""Evaluation throughput (episodes/s), sequential and batched side by side, next to the loader's.

    python benchmarks/evaluation.py                     # Conv4 and ResNet18, standard vs acdc-net, 84 px
    python benchmarks/evaluation.py --backbones resnet10,resnet18 --convs standard,acdc-net,acdc-block
    python benchmarks/evaluation.py --eval-batch 4,16   # several stack sizes

Evaluation is what ``evaluate.py`` does per test episode: adapt ``--inner-steps-eval`` steps from
the meta-parameters without a second-order graph, then score the query set under ``no_grad``.
*Sequential* is :meth:`MAML.evaluate_episode` per episode; *batched* is
:meth:`MAML.evaluate_episodes` with ``batch_size`` ``--eval-batch`` (episodes stacked and adapted as
one ``torch.func.vmap`` program). Both score the same episodes; each row records the ratio
``batched / sequential`` episodes/s and the largest per-episode difference of query loss and
accuracy between the two (they should agree to float tolerance). Episodes come from the
built-in dataset through :func:`fewshot_acdc.data.episode_loader` (the real loader, not random
tensors), drawn before timing, so the script also times the loader alone on the same split and
settings and reports ``loader_headroom = loader episodes/s / sequential episodes/s``: above 1 the
loader keeps up with evaluation in the main process (no workers). ``--processes 2`` adds the
torchrun way: the same episodes split across N gloo processes (spawned here as torchrun would
start them, ``--threads`` threads each) by :func:`fewshot_acdc.runs.evaluation.score_episode_set`,
timed from a barrier after every rank's warm-up to the gathered accuracies (process start-up,
paid once per evaluation, is not in the rate); ``max_accuracy_difference`` against sequential
should be 0. Saves JSON to benchmarks/results/evaluation.json with the code's commit and the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as multiprocessing

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import created_now, revision_at_start, save_report  # noqa: E402
from benchmarks.split_evaluation import rank_worker  # noqa: E402
from fewshot_acdc.runs import provenance  # noqa: E402
from fewshot_acdc.data import create_dataset, episode_loader  # noqa: E402
from fewshot_acdc.meta import MAML  # noqa: E402
from fewshot_acdc.models import create_backbone  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default="conv4,resnet18")
    parser.add_argument("--convs", default="standard,acdc-net")
    parser.add_argument("--scopes", default="all,atoms")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--inner-steps-eval", type=int, default=5)
    parser.add_argument("--inner-lr", type=float, default=0.01)
    parser.add_argument("--episodes", type=int, default=16, help="timed episodes per configuration")
    parser.add_argument("--eval-batch", default="8", help="stack sizes of batched evaluation (comma-separated)")
    parser.add_argument("--processes", default="", help="world sizes of split evaluation (comma-separated, e.g. 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (per process)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
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


def timed(function, device: torch.device) -> tuple:
    """``(function(), seconds)``; on a GPU after the queued kernels have finished (the engine
    reads its results on the host anyway, so this only guards the start)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - start


def evaluation_rates(model, scope: str, dataset, shots: int, batch_sizes, args) -> dict:
    """Sequential and batched episodes/s on the same ``args.episodes`` episodes (drawn first, so
    the loader is not timed), each after a warm-up, and how far their results differ."""
    maml = MAML(model, scope=scope, inner_lr=args.inner_lr, inner_steps_eval=args.inner_steps_eval)
    loader = episode_loader(dataset, ways=5, shots=shots, queries=args.queries, seed=1, episodes=args.episodes + 1)
    device = next(model.parameters()).device
    warm_up, *episodes = [episode.to(device) for episode in loader]
    maml.evaluate_episode(warm_up)
    sequential, seconds = timed(lambda: [maml.evaluate_episode(episode) for episode in episodes], device)
    row = {"sequential_episodes_per_second": len(episodes) / seconds, "batched": [],
           "sequential_accuracies": [accuracy for _, accuracy in sequential]}
    for size in batch_sizes:
        maml.evaluate_episodes([warm_up] * min(size, 2), batch_size=size)
        batched, seconds = timed(lambda: maml.evaluate_episodes(episodes, batch_size=size), device)
        rate = len(episodes) / seconds
        row["batched"].append({
            "eval_batch": size, "episodes_per_second": rate,
            "over_sequential": rate / row["sequential_episodes_per_second"],
            "max_query_loss_difference": max(abs(a[0] - b[0]) for a, b in zip(batched, sequential)),
            "max_accuracy_difference": max(abs(a[1] - b[1]) for a, b in zip(batched, sequential)),
        })
    return row


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_rates(model, scope: str, shots: int, sequential: dict, world_sizes, args, backbone: str, conv: str) -> list:
    """Episodes/s of the same episodes split across each world size's gloo processes (CPU only);
    ``sequential``: ``{"rate": episodes/s, "accuracies": [...]}`` of one process on them."""
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        state = Path(scratch) / "model.pt"
        torch.save(model.state_dict(), state)
        for world in world_sizes:
            job = {"backbone": backbone, "conv": conv, "scope": scope, "shots": shots, "image_size": args.image_size,
                   "queries": args.queries, "inner_lr": args.inner_lr, "inner_steps_eval": args.inner_steps_eval,
                   "episodes": args.episodes, "threads": args.threads, "state": str(state),
                   "out": str(Path(scratch) / f"world{world}.json")}
            multiprocessing.spawn(rank_worker, args=(world, _free_port(), job), nprocs=world, join=True)
            result = json.loads(Path(job["out"]).read_text())
            rate = args.episodes / result["seconds"]
            rows.append({"world_size": world, "episodes_per_second": rate,
                         "over_sequential": rate / sequential["rate"],
                         "max_accuracy_difference": max(abs(a - b) for a, b in
                                                        zip(result["accuracies"], sequential["accuracies"]))})
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    revision_at_start()  # the code measured is the code now, whatever is committed meanwhile
    torch.set_num_threads(args.threads)
    dataset = create_dataset("builtin", split="test", image_size=args.image_size)
    started = time.time()
    rows = []
    shots_list = [int(shots) for shots in args.shots.split(",")]
    batch_sizes = [int(size) for size in args.eval_batch.split(",")]
    world_sizes = [int(world) for world in args.processes.split(",") if world]
    if world_sizes and args.device != "cpu":
        raise SystemExit("--processes times gloo processes on the CPU; on GPUs run evaluate.py under torchrun")
    loader = {shots: loader_rate(dataset, shots, args.queries, max(args.episodes, 50)) for shots in shots_list}
    for backbone in args.backbones.split(","):
        for conv in args.convs.split(","):
            torch.manual_seed(0)
            model = create_backbone(backbone, conv, num_classes=5, image_size=args.image_size,
                                    track_running_stats=False).to(args.device)
            for scope in args.scopes.split(","):
                if scope != "all" and conv == "standard":
                    continue
                for shots in shots_list:
                    rates = evaluation_rates(model, scope, dataset, shots, batch_sizes, args)
                    rate = rates["sequential_episodes_per_second"]
                    split = process_rates(model, scope, shots, {"rate": rate, "accuracies": rates["sequential_accuracies"]},
                                          world_sizes, args, backbone, conv)
                    row = {"backbone": backbone, "conv": conv, "scope": scope, "shots": shots,
                           "image_size": args.image_size, "evaluation_episodes_per_second": rate,
                           "seconds_for_600_episodes": 600 / rate, "batched": rates["batched"], "processes": split,
                           "loader_episodes_per_second": loader[shots], "loader_headroom": loader[shots] / rate}
                    rows.append(row)
                    batched = ", ".join([f"batch {b['eval_batch']}: {b['episodes_per_second']:.2f} "
                                         f"({b['over_sequential']:.2f}x, max loss diff {b['max_query_loss_difference']:.1e})"
                                         for b in rates["batched"]] +
                                        [f"{p['world_size']} processes: {p['episodes_per_second']:.2f} "
                                         f"({p['over_sequential']:.2f}x)" for p in split])
                    print(f"[{time.time() - started:5.0f} s] {backbone} {conv} {scope} {shots}-shot: "
                          f"sequential {rate:.2f} episodes/s (600 in {600 / rate:.0f} s); {batched}; loader "
                          f"{loader[shots]:.0f} episodes/s ({loader[shots] / rate:.0f}x headroom)", flush=True)
    report = {
        "created": created_now(),
        "command": "python benchmarks/evaluation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": args.device,
        "device_name": (torch.cuda.get_device_name() if args.device == "cuda"
                        else platform.processor() or platform.machine()), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "threads": args.threads, "machine": provenance.machine(),
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "settings": {"ways": 5, "queries": args.queries, "inner_steps_eval": args.inner_steps_eval,
                     "inner_lr": args.inner_lr, "episodes": args.episodes, "image_size": args.image_size,
                     "eval_batch": batch_sizes, "processes": world_sizes},
        "rows": rows,
    }
    save_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
