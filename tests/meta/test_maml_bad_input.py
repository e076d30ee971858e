"""Malformed episodes and diverging inner loops: clear errors naming the problem, never a skip."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fewshot_acdc.meta import MAML, Episode, EpisodeError, NonFiniteLossError
from .maml_testing import build_model, random_episode


@pytest.fixture(scope="module")
def maml():
    return MAML(build_model("conv4", "acdc-net", image_size=16), scope="atoms", inner_lr=0.05,
                inner_steps=3, inner_steps_eval=3)


def episode(seed=0, **changes):
    """A well-formed episode with some fields replaced. A plain namespace, not an Episode: the
    engine accepts any object with the four fields, and must itself catch what is wrong."""
    valid = random_episode(seed, image_size=16)
    fields = ("support_images", "support_labels", "query_images", "query_labels")
    return SimpleNamespace(**{**{name: getattr(valid, name) for name in fields}, **changes})


def adam(maml):
    return torch.optim.Adam(maml.model.parameters(), lr=1e-3)


@pytest.mark.parametrize("changes, message", [
    ({"support_labels": torch.tensor([0, 1, 2, 3, 5])}, r"support_labels contain label 5, outside 0\.\.4"),
    ({"query_labels": torch.tensor([0, 1, 2, 3, 4, -1, 1, 2, 3, 4])}, r"query_labels contain label -1"),
    ({"support_images": torch.zeros(0, 3, 16, 16, dtype=torch.float64),
      "support_labels": torch.zeros(0, dtype=torch.int64)}, "empty support set"),
    ({"query_images": torch.zeros(10, 3, 20, 20, dtype=torch.float64)}, r"differ in \[channels, height, width\]"),
    ({"query_images": torch.zeros(10, 1, 16, 16, dtype=torch.float64)}, r"differ in \[channels, height, width\]"),
    ({"support_labels": torch.tensor([0, 1, 2, 3])}, r"one label per image: shape \(5,\) for 5 images"),
    ({"support_labels": torch.zeros(5, 1, dtype=torch.int64)}, "one label per image"),
    ({"support_images": torch.zeros(5, 16, 16, dtype=torch.float64)}, r"\[examples, channels, height, width\]"),
    ({"support_labels": torch.zeros(5)}, "integer class indices"),
    ({"support_images": torch.zeros(5, 3, 16, 16, dtype=torch.uint8)}, "floating point"),
    ({"query_labels": [0, 1, 2, 3, 4]}, "must be tensors"),
])
def test_malformed_episode_is_named(maml, changes, message):
    bad = episode(1, **changes)
    with pytest.raises(EpisodeError, match=r"episode 1 of the meta-batch: .*" + message):
        maml.meta_train_step([episode(0), bad], adam(maml))
    with pytest.raises(EpisodeError, match=message):
        maml.evaluate_episode(bad)


def test_episode_errors_are_value_errors_and_nothing_was_stepped(maml):
    optimizer = adam(maml)
    before = [p.detach().clone() for p in maml.model.parameters()]
    with pytest.raises(ValueError):
        maml.meta_train_step([episode(0, support_labels=torch.tensor([0, 1, 2, 3, 9]))], optimizer)
    assert all(torch.equal(a, b) for a, b in zip(before, maml.model.parameters()))
    assert not optimizer.state


def test_other_malformed_meta_batches(maml):
    with pytest.raises(EpisodeError, match="empty meta-batch"):
        maml.meta_train_step([], adam(maml))
    with pytest.raises(EpisodeError, match="sequence of episodes"):
        maml.meta_train_step(episode(0), adam(maml))
    with pytest.raises(EpisodeError, match="has no support_images"):
        maml.meta_train_step([object()], adam(maml))
    with pytest.raises(EpisodeError, match="support_labels contain label 7"):
        maml.adapt(maml.parameters(), episode(0).support_images, torch.tensor([0, 1, 2, 3, 7]))


def test_vmap_needs_equal_episode_shapes():
    vmapped = MAML(build_model("conv4", "acdc-net", image_size=16), scope="atoms", task_batching="vmap")
    longer = random_episode(1, queries=3, image_size=16)
    with pytest.raises(EpisodeError, match="episode 1 of the meta-batch: task_batching='vmap' needs episodes of equal"):
        vmapped.meta_train_step([episode(0), longer], adam(vmapped))


def test_nan_in_a_task_names_the_task_and_step_and_steps_nothing(maml):
    optimizer = adam(maml)
    before = [p.detach().clone() for p in maml.model.parameters()]
    poisoned = episode(1)
    poisoned.support_images[2, 0, 3, 3] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"non-finite support loss \(nan\) at inner step 1 of 3 "
                                                 r"in task 1 \(0-based\) of a meta-batch of 3") as caught:
        maml.meta_train_step([episode(0), poisoned, episode(2)], optimizer)
    error = caught.value
    assert isinstance(error, FloatingPointError)
    assert (error.task, error.step, error.phase) == (1, 1, "support")
    assert "no parameter was updated" in str(error)
    assert all(torch.equal(a, b) for a, b in zip(before, maml.model.parameters()))
    assert all(p.grad is None for p in maml.model.parameters())
    assert not optimizer.state


def test_nan_in_the_query_set_is_named(maml):
    poisoned = episode(0)
    poisoned.query_images[0] = float("inf")
    with pytest.raises(NonFiniteLossError, match=r"non-finite query loss .* after 3 inner steps in task 0"):
        maml.meta_train_step([poisoned], adam(maml))
    with pytest.raises(NonFiniteLossError, match="non-finite query loss"):
        maml.evaluate_episode(poisoned)


class BlowsUpWhenWeightsGrow(nn.Module):
    """Finite loss while ``|W|^2 <= 1``; NaN (square root of a negative) once an update makes it larger."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 2, bias=False).double()
        nn.init.zeros_(self.head.weight)

    def forward(self, images):
        scale = torch.sqrt(1.0 - self.head.weight.pow(2).sum())
        return self.head(images.flatten(1)) * scale


def test_divergence_names_the_first_bad_inner_step():
    model = BlowsUpWhenWeightsGrow()
    images = torch.eye(4, dtype=torch.float64).reshape(4, 4, 1, 1)
    labels = torch.tensor([0, 1, 0, 1])
    diverging = Episode(images, labels, images, labels)
    maml = MAML(model, inner_lr=100.0, inner_steps=3, inner_steps_eval=4)
    with pytest.raises(NonFiniteLossError, match="at inner step 2 of 3 in task 0") as caught:
        maml.meta_train_step([diverging], torch.optim.SGD(model.parameters(), lr=0.1))
    assert caught.value.step == 2
    with pytest.raises(NonFiniteLossError, match="at inner step 2 of 4") as caught:
        maml.evaluate_episode(diverging)
    assert caught.value.task is None and "meta-batch" not in str(caught.value)
    with pytest.raises(NonFiniteLossError, match="at inner step 2 of 2"):
        maml.adapt(maml.parameters(), images, labels, steps=2)
    # A stable learning rate on the same model is fine.
    MAML(model, inner_lr=0.1, inner_steps=3).meta_train_step([diverging], torch.optim.SGD(model.parameters(), lr=0.1))


def test_nan_is_named_with_vmapped_tasks_too():
    vmapped = MAML(build_model("conv4", "acdc-net", image_size=16), scope="atoms", inner_lr=0.05,
                   inner_steps=2, task_batching="vmap")
    poisoned = episode(1)
    poisoned.support_images[0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"inner step 1 of 2 in task 1 \(0-based\) of a meta-batch of 2"):
        vmapped.meta_train_step([episode(0), poisoned], adam(vmapped))
    assert all(p.grad is None for p in vmapped.model.parameters())
