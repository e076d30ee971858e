"""Batched evaluation (:meth:`MAML.evaluate_episodes`, vmapped) against sequential evaluation.

Float64, tiny images: the two must agree to rounding (the batched kernels sum in another order),
episode by episode, whatever is adapted and however BatchNorm is set up.
"""
from __future__ import annotations

import math

import pytest
import torch

from fewshot_acdc.meta import MAML, NonFiniteLossError
from fewshot_acdc.meta.batching import (MAX_EVAL_BATCH, SAVED_PER_SUPPORT_IMAGE, activation_elements_per_image,
                                        episodes_per_batch)
from fewshot_acdc.nn import use_per_step_batchnorm
from .maml_testing import build_model, random_episode

IMAGE_SIZE = 16
LOSS_TOLERANCE = 1e-9  # relative, float64


def episodes(count=3, shots=1, queries=2, seed=0):
    return [random_episode(seed + index, shots=shots, queries=queries, image_size=IMAGE_SIZE) for index in range(count)]


def engine(backbone, conv, scope, steps=2, per_step_batchnorm=False):
    model = build_model(backbone, conv, image_size=IMAGE_SIZE)
    if per_step_batchnorm:
        use_per_step_batchnorm(model, 2)
    return MAML(model, scope=scope, inner_lr=0.05, inner_steps=2, inner_steps_eval=steps)


def assert_same_results(batched, sequential):
    assert len(batched) == len(sequential)
    worst = 0.0
    for (loss, accuracy), (expected_loss, expected_accuracy) in zip(batched, sequential):
        assert accuracy == expected_accuracy
        worst = max(worst, abs(loss - expected_loss) / abs(expected_loss))
    assert worst <= LOSS_TOLERANCE, worst
    print(f"largest relative query-loss difference {worst:.2e}")


@pytest.mark.parametrize("backbone, conv, scope", [
    ("conv4", "standard", "all"), ("conv4", "acdc-net", "all"), ("conv4", "acdc-net", "atoms"),
    ("resnet10", "standard", "all"), ("resnet10", "acdc-net", "all"), ("resnet10", "acdc-net", "atoms"),
])
def test_batched_evaluation_equals_sequential(backbone, conv, scope):
    maml = engine(backbone, conv, scope)
    tasks = episodes()
    sequential = [maml.evaluate_episode(episode) for episode in tasks]
    # batch 2 over 3 episodes: a full stack and a stack of one
    assert_same_results(maml.evaluate_episodes(tasks, batch_size=2), sequential)


@pytest.mark.parametrize("scope", ["head", "atoms+head"])
def test_batched_evaluation_equals_sequential_for_head_scopes(scope):
    """``head`` adapts only the classifier: the support features are computed once per episode,
    inside the vmapped program too."""
    maml = engine("conv4", "acdc-net", scope, steps=3)
    tasks = episodes()
    assert_same_results(maml.evaluate_episodes(tasks, batch_size=3), [maml.evaluate_episode(e) for e in tasks])


def test_per_step_batchnorm_is_batched_with_running_statistics():
    maml = engine("conv4", "standard", "all", steps=3, per_step_batchnorm=True)
    with torch.no_grad():  # distinct running statistics per step, so that using the wrong step shows
        for module in maml.model.modules():
            if hasattr(module, "running_var") and module.running_var is not None:
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    tasks = episodes()
    assert_same_results(maml.evaluate_episodes(tasks, batch_size=3), [maml.evaluate_episode(e) for e in tasks])


def test_episodes_of_different_shapes_are_stacked_separately_in_order():
    maml = engine("conv4", "acdc-net", "atoms")
    tasks = [episodes(1, shots=1, seed=0)[0], episodes(1, shots=2, seed=1)[0], episodes(1, shots=2, seed=2)[0],
             episodes(1, shots=1, seed=3)[0]]
    assert_same_results(maml.evaluate_episodes(tasks, batch_size=4), [maml.evaluate_episode(e) for e in tasks])


def test_zero_steps_scores_the_initialisation():
    maml = engine("conv4", "acdc-net", "all", steps=0)
    tasks = episodes()
    assert_same_results(maml.evaluate_episodes(tasks, batch_size=3), [maml.evaluate_episode(e) for e in tasks])


def test_batched_evaluation_changes_nothing_and_draws_no_random_numbers():
    """Validation runs in the middle of training: it must leave the parameters, the modes and
    torch's RNG stream (atom-drop masks come from it) exactly as they were."""
    maml = engine("conv4", "acdc-net", "atoms")
    maml.model.train()
    before = {name: p.detach().clone() for name, p in maml.model.named_parameters()}
    rng = torch.get_rng_state()
    maml.evaluate_episodes(episodes(), batch_size=3)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(module.training for module in maml.model.modules())
    for name, p in maml.model.named_parameters():
        assert torch.equal(p, before[name]), name
        assert p.grad is None


def test_non_finite_loss_is_reported_as_sequential_evaluation_reports_it():
    maml = engine("conv4", "standard", "all")
    tasks = episodes()
    tasks[1].support_images[0, 0, 0, 0] = math.nan
    with pytest.raises(NonFiniteLossError) as sequential:
        [maml.evaluate_episode(episode) for episode in tasks]
    with pytest.raises(NonFiniteLossError) as batched:
        maml.evaluate_episodes(tasks, batch_size=3)
    assert str(batched.value) == str(sequential.value)


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
def test_bad_batch_size_is_refused(batch_size):
    with pytest.raises(ValueError, match="batch_size must be None or an integer >= 1"):
        engine("conv4", "standard", "all").evaluate_episodes(episodes(), batch_size=batch_size)


def test_default_is_sequential_on_a_cpu():
    maml = engine("conv4", "standard", "all")
    assert maml.evaluation_batch_size(episodes(1)[0]) == 1


def test_memory_estimate_bounds_the_stack():
    model = build_model("conv4", "standard", image_size=IMAGE_SIZE)
    episode = episodes(1, shots=2, queries=3)[0]
    elements = activation_elements_per_image(model, tuple(episode.support_images.shape[1:]), torch.float64,
                                             torch.device("cpu"))
    # Conv4: the first block's conv, BN and ReLU alone output 3 x 64 x 16 x 16 elements per image
    assert elements > 3 * 64 * IMAGE_SIZE * IMAGE_SIZE
    one = elements * (SAVED_PER_SUPPORT_IMAGE * 10 + 15) * 8  # bytes: 10 support, 15 query images, float64
    for stack in (2, 3, 7):
        assert episodes_per_batch(model, episode, stack * one) == stack
        assert episodes_per_batch(model, episode, stack * one - 1) == stack - 1
    assert episodes_per_batch(model, episode, budget_bytes=1) == 1  # never below one episode
    assert episodes_per_batch(model, episode, 10**15) == MAX_EVAL_BATCH
