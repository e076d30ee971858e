"""One rank of benchmarks/evaluation.py's split evaluation (``--processes``), in a module of its
own so that spawned processes can import it whether the benchmark runs as a script or is loaded
by the tests."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from fewshot_acdc.data import create_dataset, episode_loader
from fewshot_acdc.meta import MAML
from fewshot_acdc.models import create_backbone
from fewshot_acdc.runs import distributed
from fewshot_acdc.runs.evaluation import score_episode_set


def rank_worker(rank: int, world: int, port: int, job: dict) -> None:
    """One rank of a split evaluation: the benchmark's model and episodes, its share, timed."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(job["threads"])
    group = distributed.start("cpu")
    try:
        model = create_backbone(job["backbone"], job["conv"], num_classes=5, image_size=job["image_size"],
                                track_running_stats=False)
        model.load_state_dict(torch.load(job["state"], weights_only=True))
        maml = MAML(model, scope=job["scope"], inner_lr=job["inner_lr"], inner_steps_eval=job["inner_steps_eval"])
        dataset = create_dataset("builtin", split="test", image_size=job["image_size"])
        loader = episode_loader(dataset, ways=5, shots=job["shots"], queries=job["queries"], seed=1,
                                episodes=job["episodes"] + 1)
        warm_up, *episodes = list(loader)
        maml.evaluate_episode(warm_up)
        group.barrier()
        start = time.perf_counter()
        accuracies = score_episode_set(maml, episodes, torch.device("cpu"), 1, group)
        seconds = time.perf_counter() - start
        if rank == 0:
            Path(job["out"]).write_text(json.dumps({"seconds": seconds, "accuracies": accuracies}))
    finally:
        distributed.stop(group)
