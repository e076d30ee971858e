"""MAML with parameters and data on a device that is not the CPU (torch's ``meta`` device).

What a first GPU run would show, checked on the CPU (tests/device_testing.py says how): a tensor
made on the wrong device raises, and every value read on the host is recorded with the function
that read it. The meta-step reads the host exactly where it means to: once to check the label
range of a meta-batch whose labels are already on the device (before the inner loop) and once for
its statistics (after the backward); evaluation likewise once per episode (or stack of episodes).
The inner loop reads nothing, in both orders, with recomputed second-order steps and with
atom-drop drawing its masks on the device.
"""
from __future__ import annotations

import pytest
import torch

import fewshot_acdc.meta.functional as functional
from fewshot_acdc.meta import MAML, Episode, adapted_parameter_names
from fewshot_acdc.meta.functional import adapt_steps, weighted_query_loss
from fewshot_acdc.models import create_backbone
from ..device_testing import HostTraffic
from .maml_testing import random_episode

LABEL_CHECK = ("fewshot_acdc/meta/episodes.py", "check_label_ranges")
META_STEP_READ = ("fewshot_acdc/meta/maml.py", "meta_gradient")
IMAGE_SIZE = 32

MODELS = [(backbone, conv, scope) for backbone in ("conv4", "resnet10")
          for conv, scope in (("standard", "all"), ("acdc-net", "all"), ("acdc-net", "atoms"))]


def device_model(backbone: str, conv: str, **kwargs) -> torch.nn.Module:
    """A backbone built on the ``meta`` device (built there, not moved: moving unties tensors)."""
    if conv != "standard":
        kwargs.setdefault("atom_drop", 0.2)  # masks drawn on the device, in the inner loop too
    torch.manual_seed(0)
    with torch.device("meta"):
        return create_backbone(backbone, conv, num_classes=5, image_size=IMAGE_SIZE, track_running_stats=False,
                               **kwargs)


def device_episode(seed: int) -> Episode:
    episode = random_episode(seed, image_size=IMAGE_SIZE, dtype=torch.float32)
    return Episode(*(tensor.to("meta") for tensor in (episode.support_images, episode.support_labels,
                                                      episode.query_images, episode.query_labels)))


def assert_on_device(model: torch.nn.Module) -> None:
    for name, parameter in model.named_parameters():
        assert parameter.device.type == "meta", name
        assert parameter.grad is not None and parameter.grad.device.type == "meta", name


@pytest.mark.parametrize("recompute", [False, True], ids=["plain", "recomputed"])
@pytest.mark.parametrize("backbone, conv, scope", MODELS)
def test_a_meta_train_step_on_the_device_reads_the_host_where_it_means_to(backbone, conv, scope, recompute):
    model = device_model(backbone, conv)
    maml = MAML(model, scope=scope, inner_lr=0.05, inner_steps=2, recompute_inner_steps=recompute)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    episodes = [device_episode(seed) for seed in (1, 2)]
    with HostTraffic():  # the first step makes Adam's state and caches constants on the device
        maml.meta_train_step(episodes, optimizer, grad_clip=1.0)
    with HostTraffic() as traffic:
        stats = maml.meta_train_step(episodes, optimizer, grad_clip=1.0)
    assert traffic.reads == [LABEL_CHECK, META_STEP_READ]
    assert traffic.writes == []
    assert_on_device(model)
    assert all(state.device.type in ("meta", "cpu") for group in optimizer.state.values() for state in group.values())
    assert set(stats["grad_norm_by_role"]) and len(stats["support_loss_by_step"]) == 2


def test_labels_from_the_host_are_checked_there_and_copied_once():
    """What a data loader hands over: the episode on the host. The label check then reads the
    host's own copy (no device read) and the episode is copied to the device, tensor by tensor."""
    model = device_model("conv4", "acdc-net")
    maml = MAML(model, scope="atoms", inner_lr=0.05, inner_steps=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    episodes = [random_episode(seed, image_size=IMAGE_SIZE, dtype=torch.float32) for seed in (1, 2)]
    with HostTraffic():
        maml.meta_train_step(episodes, optimizer)
    with HostTraffic() as traffic:
        maml.meta_train_step(episodes, optimizer)
    assert traffic.reads == [META_STEP_READ]
    assert traffic.writes == [("fewshot_acdc/meta/episodes.py", "<genexpr>")] * 8  # 2 episodes x 4 tensors


@pytest.mark.parametrize("first_order", [False, True])
def test_vmapped_task_batching_on_the_device(first_order):
    model = device_model("conv4", "acdc-net")
    maml = MAML(model, scope="all", inner_lr=0.05, inner_steps=2, first_order=first_order, task_batching="vmap")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    episodes = [device_episode(seed) for seed in (1, 2)]
    with HostTraffic() as traffic:
        maml.meta_train_step(episodes, optimizer)
    assert traffic.reads == [LABEL_CHECK, META_STEP_READ] and traffic.writes == []
    assert_on_device(model)


@pytest.mark.parametrize("recompute", [False, True], ids=["plain", "recomputed"])
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("backbone, conv, scope", MODELS)
def test_the_inner_loop_and_meta_gradient_read_nothing_on_the_host(backbone, conv, scope, first_order, recompute):
    model = device_model(backbone, conv)
    episode = device_episode(3)
    with HostTraffic() as traffic:
        result = adapt_steps(model, dict(model.named_parameters()), adapted_parameter_names(model, scope),
                             episode.support_images, episode.support_labels, inner_lr=0.05, steps=3,
                             create_graph=not first_order, recompute=recompute, score_final_support=True)
        query_loss, _ = weighted_query_loss(model, result, episode.query_images, episode.query_labels)
        query_loss.backward()  # where the recomputed steps run again
    assert traffic.transfers == []
    assert all(tensor.device.type == "meta" for tensor in result.adapted.values())
    assert result.support_losses.device.type == result.gradient_norms.device.type == "meta"


@pytest.mark.parametrize("backbone, conv, scope", MODELS)
def test_an_evaluation_episode_on_the_device_reads_the_host_once(backbone, conv, scope):
    model = device_model(backbone, conv)
    maml = MAML(model, scope=scope, inner_lr=0.05, inner_steps_eval=3)
    episode = device_episode(4)
    with HostTraffic() as traffic:
        loss, accuracy = maml.evaluate_episode(episode)
    assert traffic.reads == [LABEL_CHECK, ("fewshot_acdc/meta/maml.py", "evaluate_episode")]
    assert traffic.writes == [] and (type(loss), type(accuracy)) == (float, float)
    assert all(parameter.grad is None for parameter in model.parameters())


def test_stacked_evaluation_episodes_on_the_device_read_the_host_once_per_stack():
    model = device_model("resnet10", "acdc-net")
    maml = MAML(model, scope="all", inner_lr=0.05, inner_steps_eval=2)
    episodes = [device_episode(seed) for seed in (5, 6, 7)]
    with HostTraffic() as traffic:
        results = maml.evaluate_episodes(episodes, batch_size=2)
    assert len(results) == 3
    assert traffic.reads == [LABEL_CHECK] + [("fewshot_acdc/meta/maml.py", "evaluate_episodes")] * 2


# --------------------------------------------------------------------------- the harness itself
def test_a_host_read_in_the_inner_loop_is_caught_and_named(monkeypatch):
    """Guards the tests above against a vacuous pass: a ``float(loss)`` slipped into the support
    loss shows up as a read from the inner loop's module, on every step."""
    original = functional.classification_loss

    def reading_loss(*args):
        loss = original(*args)
        float(loss.detach())
        return loss
    monkeypatch.setattr(functional, "classification_loss", reading_loss)
    model = device_model("conv4", "acdc-net")
    episode = device_episode(3)
    with HostTraffic() as traffic:
        adapt_steps(model, dict(model.named_parameters()), adapted_parameter_names(model, "all"),
                    episode.support_images, episode.support_labels, inner_lr=0.05, steps=2, create_graph=True)
    assert [path for path, _ in traffic.reads] == ["fewshot_acdc/meta/functional.py"] * 2


def test_a_tensor_made_on_the_host_in_the_inner_loop_fails_there(monkeypatch):
    original = functional.classification_loss

    def host_tensor_loss(model, params, images, labels):
        return original(model, params, images, labels) + torch.zeros(len(labels)).mean(0, keepdim=True)
    monkeypatch.setattr(functional, "classification_loss", host_tensor_loss)
    model = device_model("conv4", "standard")
    episode = device_episode(3)
    with pytest.raises(RuntimeError, match="meta"):
        adapt_steps(model, dict(model.named_parameters()), adapted_parameter_names(model, "all"),
                    episode.support_images, episode.support_labels, inner_lr=0.05, steps=1, create_graph=True)
