"""Specification of fewshot_acdc.runs.evaluation's batched scoring: the same accuracies as
sequential scoring, episode by episode, whatever the stack size."""
import json

import pytest
import torch

from fewshot_acdc.config import ConfigError
from fewshot_acdc.meta import MAML
from fewshot_acdc.models import create_backbone
from fewshot_acdc.runs.evaluation import evaluate_run, score_episodes
from fewshot_acdc.runs.training import train
from fewshot_acdc.data import Episode


def tiny_maml():
    torch.manual_seed(0)
    model = create_backbone("conv4", "acdc-net", atoms=4, num_classes=3, image_size=16, track_running_stats=False)
    return MAML(model.double(), scope="all", inner_lr=0.1, inner_steps=1, inner_steps_eval=2)


def episodes(count, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat_interleave(2)
    return [Episode(torch.randn(6, 3, 16, 16, generator=generator, dtype=torch.float64), labels,
                    torch.randn(6, 3, 16, 16, generator=generator, dtype=torch.float64), labels)
            for _ in range(count)]


@pytest.mark.parametrize("batch_size", [2, 3, 5, None])
def test_score_episodes_in_stacks_gives_the_sequential_accuracies_in_order(batch_size):
    maml, tasks = tiny_maml(), episodes(5)
    sequential = score_episodes(maml, tasks, torch.device("cpu"), batch_size=1)
    consumed = []

    def stream():  # a generator, as a progress bar is: drawn one stack at a time
        for episode in tasks:
            consumed.append(episode)
            yield episode
    assert score_episodes(maml, stream(), torch.device("cpu"), batch_size=batch_size) == sequential
    assert len(consumed) == 5
    assert len(set(sequential)) > 1  # the episodes are told apart: order matters for the comparison


def test_score_episodes_of_nothing_is_empty():
    assert score_episodes(tiny_maml(), [], torch.device("cpu"), batch_size=None) == []
    assert score_episodes(tiny_maml(), [], torch.device("cpu"), batch_size=4) == []


def test_eval_batch_changes_no_recorded_accuracy_and_may_change_on_resume(tiny_config, tmp_path):
    run = tmp_path / "run"
    train(tiny_config.replace(iterations=3), run, progress=False)
    one = evaluate_run(run, shots=[1], device="cpu", eval_batch=1)[0]
    stacked = evaluate_run(run, shots=[1], device="cpu", eval_batch=3)[0]  # 5 episodes: stacks of 3 and 2
    assert stacked["per_episode_accuracy"] == one["per_episode_accuracy"]
    assert stacked["mean_accuracy"] == one["mean_accuracy"]
    # an evaluation-only setting: a resume may change it, and it is recorded as a change
    summary = train(tiny_config.replace(eval_batch=2), run, resume=True, progress=False)
    assert {"key": "eval_batch", "from": None, "to": 2, "from_iteration": 4} in summary["config_changes"]


def test_eval_batch_must_be_positive_or_null(tiny_config):
    with pytest.raises(ConfigError, match="eval_batch must be >= 1 or null"):
        tiny_config.replace(eval_batch=0)
    with pytest.raises(ConfigError, match="did you mean 'eval_batch'"):
        tiny_config.replace(eval_batches=2)
    assert tiny_config.eval_batch is None
