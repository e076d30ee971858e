"""Specification of MAML's ``head_init``: where each task's classifier starts.

``per-class`` is MAML's own (each class its learned row); ``shared`` is UNICORN-MAML's (Ye & Chao
2022): every class starts from one learned row, so the meta-learned model treats every labelling
of an episode alike and scores any number of ways from the same start.
"""
from __future__ import annotations

import pytest
import torch

from fewshot_acdc.config import ConfigError, load_config
from fewshot_acdc.meta import MAML, Episode
from fewshot_acdc.runs.evaluation import widen_head

from .maml_testing import build_model, random_episode, structured_episode


def _relabelled(episode: Episode, permutation: torch.Tensor) -> Episode:
    """The same images with class c called permutation[c]."""
    return Episode(episode.support_images, permutation[episode.support_labels],
                   episode.query_images, permutation[episode.query_labels])


def _maml(head_init: str, scope: str = "all", **kwargs) -> MAML:
    model = build_model("conv4", "acdc-net", image_size=16, atom_drop=0.0, **kwargs)
    return MAML(model, scope=scope, inner_lr=0.1, inner_steps=2, inner_steps_eval=3, head_init=head_init)


def test_shared_starts_every_class_from_the_same_row_and_keeps_it_one_row_under_adam():
    maml = _maml("shared")
    head = maml.model.head
    assert torch.equal(head.weight, head.weight[:1].expand_as(head.weight))
    optimizer = torch.optim.Adam(maml.meta_parameters(), lr=0.01)
    for step in range(3):
        optimizer.zero_grad()
        maml.meta_gradient([random_episode(seed, image_size=16) for seed in range(step, step + 2)])
        grad = head.weight.grad
        # The meta-gradient reaches every row as the mean over classes: one value per column.
        torch.testing.assert_close(grad, grad[:1].expand_as(grad), rtol=1e-12, atol=1e-15)
        assert grad.abs().max() > 0
        optimizer.step()
    torch.testing.assert_close(head.weight, head.weight[:1].expand_as(head.weight), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(head.bias, head.bias[:1].expand_as(head.bias), rtol=1e-12, atol=1e-15)


def test_shared_scores_every_labelling_of_an_episode_alike_and_per_class_does_not():
    episode = structured_episode(0, ways=5, shots=1, queries=3, image_size=16, dtype=torch.float64)
    permutation = torch.tensor([3, 0, 4, 1, 2])
    shared, per_class = _maml("shared"), _maml("per-class")
    for engine, equal in ((shared, True), (per_class, False)):
        loss, _ = engine.evaluate_episode(episode)
        relabelled_loss, _ = engine.evaluate_episode(_relabelled(episode, permutation))
        assert (abs(loss - relabelled_loss) < 1e-10) is equal, (engine.head_init, loss, relabelled_loss)


def test_task_start_is_the_identity_for_per_class_and_averages_only_the_head_for_shared():
    per_class = _maml("per-class")
    params = per_class.parameters()
    assert per_class.task_start(params) is params
    shared = _maml("shared")
    params = {name: p + torch.randn_like(p) for name, p in shared.parameters().items()}
    start = shared.task_start(params)
    for name, tensor in params.items():
        if name.startswith("head."):
            torch.testing.assert_close(start[name], tensor.mean(0, keepdim=True).expand_as(tensor))
        else:
            assert start[name] is tensor


def test_a_widened_head_starts_twenty_way_tasks_where_five_way_tasks_start():
    maml = _maml("shared")
    five_way_row = maml.task_start(maml.parameters())["head.weight"][0].clone()
    widen_head(maml.model, 20)
    wide = MAML(maml.model, scope="all", inner_lr=0.1, head_init="shared")
    torch.testing.assert_close(wide.task_start(wide.parameters())["head.weight"],
                               five_way_row.expand(20, -1), rtol=1e-12, atol=1e-15)


def test_shared_learns_on_structured_episodes():
    """Not only symmetric: the inner loop separates the classes from the one shared row."""
    torch.manual_seed(0)
    maml = _maml("shared", dtype=torch.float32)
    accuracy = [maml.evaluate_episode(structured_episode(seed, image_size=16, noise=0.3))[1] for seed in range(4)]
    assert sum(accuracy) / len(accuracy) > 0.5


@pytest.mark.parametrize("scope", ["atoms", "coefficients"])
def test_shared_needs_a_scope_that_adapts_the_head(scope):
    with pytest.raises(ValueError, match="does not adapt the head"):
        _maml("shared", scope=scope)
    with pytest.raises(ConfigError, match=f"use adapt {scope}\\+head"):
        load_config(None, {"adapt": scope, "head_init": "shared"})


def test_an_unknown_head_init_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="per-class, shared"):
        _maml("unicorn")
    with pytest.raises(ConfigError, match="head_init"):
        load_config(None, {"head_init": "unicorn"})
