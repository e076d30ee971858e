"""Second-order MAML with recomputed inner steps (fewshot_acdc.meta.recompute): the plain path's
meta-gradient, in bounded memory.

The meta-gradient of ``recompute_inner_steps=True`` equals the plain second-order one to float64
rounding (1e-12 relative; it is the same ops in the same order, run twice) for standard and ACDC
networks, scopes ``all``, ``atoms`` and ``head``, 1 and 3 inner steps; with atom-drop because
every random number generator is set back to its state at the step before the step runs again
(without that the meta-gradient is wrong, as a guard below shows); with learned step sizes, the
multi-step loss and a shared head start. What the graph keeps: each recomputed step holds its inputs only, so one
more inner step adds one copy of the adapted tensors, where the plain path adds a whole step's
activations and second-order graph.
"""
from __future__ import annotations

import contextlib

import pytest
import torch

import fewshot_acdc.meta.recompute as recompute
from fewshot_acdc.meta import MAML, adapted_parameter_names
from fewshot_acdc.meta.functional import adapt_steps, weighted_query_loss
from fewshot_acdc.nn import ACDCConv2d, use_per_step_batchnorm
from .maml_testing import build_model, max_relative_error, random_episode

ROUNDING = 1e-12
IMAGE_SIZE = 16


def episodes():
    return [random_episode(seed, image_size=IMAGE_SIZE) for seed in (11, 12)]


def meta_step(backbone, conv, scope, steps, recompute_inner_steps, seed=5, model_options=None, **options):
    """Gradients (model and learned step sizes) and statistics of one meta-step, float64."""
    model = build_model(backbone, conv, image_size=IMAGE_SIZE, **(model_options or {}))
    maml = MAML(model, scope=scope, inner_lr=0.05, inner_steps=steps, recompute_inner_steps=recompute_inner_steps,
                **options)
    torch.manual_seed(seed)  # atom-drop's masks
    stats = maml.meta_gradient(episodes())
    gradients = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    gradients.update({f"step_sizes.{name}": p.grad.detach().clone()
                      for name, p in maml.step_sizes.named_parameters()})
    return gradients, stats


def assert_same_meta_step(plain, recomputed):
    (plain_gradients, plain_stats), (recomputed_gradients, recomputed_stats) = plain, recomputed
    assert max_relative_error(recomputed_gradients, plain_gradients) <= ROUNDING
    for key in ("meta_loss", "accuracy", "support_loss_by_step", "support_loss_after"):
        assert recomputed_stats[key] == pytest.approx(plain_stats[key], rel=ROUNDING), key
    for role, norms in plain_stats["inner_grad_norm_by_role"].items():
        assert recomputed_stats["inner_grad_norm_by_role"][role] == pytest.approx(norms, rel=ROUNDING), role


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("backbone, conv, scope", [
    (backbone, conv, scope) for backbone in ("conv4", "resnet10")
    for conv, scope in (("standard", "all"), ("acdc-net", "all"), ("acdc-net", "atoms"))])
def test_recomputed_steps_give_the_plain_second_order_meta_gradient(backbone, conv, scope, steps):
    assert_same_meta_step(meta_step(backbone, conv, scope, steps, False), meta_step(backbone, conv, scope, steps, True))


def test_the_comparison_sees_the_second_order_terms():
    """Guards the test above against a vacuous pass: first order differs on these cases."""
    second, _ = meta_step("conv4", "acdc-net", "all", 3, True)
    first, _ = meta_step("conv4", "acdc-net", "all", 3, False, first_order=True)
    assert max_relative_error(first, second) > 1e-3


@pytest.mark.parametrize("backbone, scope", [("conv4", "all"), ("resnet10", "atoms")])
def test_atom_drop_draws_the_same_masks_when_a_step_runs_again(backbone, scope):
    options = {"model_options": {"atom_drop": 0.3}}
    plain = meta_step(backbone, "acdc-net", scope, 3, False, **options)
    after_plain = torch.rand(4)
    recomputed = meta_step(backbone, "acdc-net", scope, 3, True, **options)
    after_recomputed = torch.rand(4)
    assert_same_meta_step(plain, recomputed)
    # The global generator leaves the step where the plain path leaves it: a run's later masks and
    # episodes, and so its resume, do not depend on the option.
    assert torch.equal(after_plain, after_recomputed)
    other_masks = meta_step(backbone, "acdc-net", scope, 3, False, seed=6, **options)
    assert max_relative_error(other_masks[0], plain[0]) > 1e-3  # the masks matter to the meta-gradient


def test_without_replaying_the_generators_the_meta_gradient_would_be_wrong(monkeypatch):
    """Why :class:`RandomState` exists: recomputing a step with fresh atom-drop masks
    differentiates another function than the one the forward ran."""
    monkeypatch.setattr(recompute.RandomState, "replay", lambda self: contextlib.nullcontext())
    options = {"model_options": {"atom_drop": 0.3}}
    plain, _ = meta_step("conv4", "acdc-net", "all", 3, False, **options)
    unreplayed, _ = meta_step("conv4", "acdc-net", "all", 3, True, **options)
    assert max_relative_error(unreplayed, plain) > 1e-3


def test_a_layers_own_generator_is_replayed_and_left_where_the_plain_path_leaves_it():
    def with_generators(recompute_inner_steps):
        model = build_model("conv4", "acdc-net", image_size=IMAGE_SIZE, atom_drop=0.3)
        generator = torch.Generator().manual_seed(7)
        for module in model.modules():
            if isinstance(module, ACDCConv2d):
                module.generator = generator
        maml = MAML(model, scope="all", inner_lr=0.05, inner_steps=3, recompute_inner_steps=recompute_inner_steps)
        maml.meta_gradient(episodes())
        return {name: p.grad.clone() for name, p in model.named_parameters()}, generator.get_state()
    (plain, plain_state), (recomputed, recomputed_state) = with_generators(False), with_generators(True)
    assert max_relative_error(recomputed, plain) <= ROUNDING
    assert torch.equal(recomputed_state, plain_state)


@pytest.mark.parametrize("learn", ["lslr", "meta-sgd"])
def test_learned_step_sizes_receive_the_plain_meta_gradient(learn):
    plain = meta_step("conv4", "acdc-net", "all", 3, False, learn_inner_lr=learn)
    recomputed = meta_step("conv4", "acdc-net", "all", 3, True, learn_inner_lr=learn)
    assert any(name.startswith("step_sizes.") for name in recomputed[0])
    assert_same_meta_step(plain, recomputed)


def test_the_multi_step_loss_is_unchanged():
    assert_same_meta_step(meta_step("resnet10", "acdc-net", "all", 3, False, multi_step_anneal=10),
                          meta_step("resnet10", "acdc-net", "all", 3, True, multi_step_anneal=10))


def test_a_shared_head_start_is_unchanged():
    """The step's input is then the rows' mean, not a parameter: the meta-gradient still reaches the
    head through it. (Every class starting alike, the head's own meta-gradient is zero up to
    rounding, 1e-17, so it is compared to the scale of the whole meta-gradient.)"""
    (plain, _), (recomputed, _) = (meta_step("resnet10", "acdc-net", "all", 3, flag, head_init="shared")
                                   for flag in (False, True))
    scale = max(float(gradient.abs().max()) for gradient in plain.values())
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], rtol=ROUNDING, atol=ROUNDING * scale)


@pytest.mark.parametrize("atom_drop", [0.0, 0.3])
def test_the_head_scope_is_unchanged_whether_its_features_are_computed_once_or_per_step(atom_drop):
    options = {"model_options": {"atom_drop": atom_drop}}
    assert_same_meta_step(meta_step("conv4", "acdc-net", "head", 3, False, **options),
                          meta_step("conv4", "acdc-net", "head", 3, True, **options))


def test_first_order_is_unchanged():
    plain = meta_step("conv4", "acdc-net", "all", 2, False, first_order=True)
    recomputed = meta_step("conv4", "acdc-net", "all", 2, True, first_order=True)
    assert all(torch.equal(recomputed[0][name], plain[0][name]) for name in plain[0])


# --------------------------------------------------------------------------- what the graph keeps
def graph_saved_bytes(loss: torch.Tensor, exclude) -> int:
    """Bytes the graph behind ``loss`` keeps for its backward, each storage once, ``exclude`` (the
    parameters) not counted (benchmarks/saved_tensors.py measures the same by op)."""
    counted = {tensor.untyped_storage().data_ptr() for tensor in exclude}
    total, pending, visited = 0, [loss.grad_fn], set()
    while pending:
        node = pending.pop()
        if node is None or node in visited:
            continue
        visited.add(node)
        for attribute in dir(node):
            if not (attribute.startswith("_saved_") or attribute == "saved_tensors"):
                continue
            try:
                value = getattr(node, attribute)
            except RuntimeError:
                continue
            for tensor in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr() not in counted:
                    counted.add(tensor.untyped_storage().data_ptr())
                    total += tensor.untyped_storage().nbytes()
        pending.extend(next_node for next_node, _ in node.next_functions)
    return total


def saved_by_graph(scope: str, steps: int, recompute_inner_steps: bool) -> int:
    model = build_model("resnet10", "acdc-net", image_size=IMAGE_SIZE)
    params = dict(model.named_parameters())
    episode = random_episode(3, image_size=IMAGE_SIZE)
    result = adapt_steps(model, params, adapted_parameter_names(model, scope), episode.support_images,
                         episode.support_labels, inner_lr=0.05, steps=steps, create_graph=True,
                         recompute=recompute_inner_steps)
    loss, _ = weighted_query_loss(model, result, episode.query_images, episode.query_labels)
    return graph_saved_bytes(loss, exclude=params.values())


@pytest.mark.parametrize("scope", ["all", "atoms"])
def test_each_more_recomputed_step_keeps_one_copy_of_the_adapted_tensors(scope):
    model = build_model("resnet10", "acdc-net", image_size=IMAGE_SIZE)
    adapted_bytes = sum(p.untyped_storage().nbytes() for name, p in model.named_parameters()
                        if name in adapted_parameter_names(model, scope))
    recomputed = saved_by_graph(scope, 3, True) - saved_by_graph(scope, 1, True)
    plain = saved_by_graph(scope, 3, False) - saved_by_graph(scope, 1, False)
    assert recomputed == 2 * adapted_bytes  # the inputs of steps 2 and 3, nothing else
    # The plain path keeps those copies too, and each step's activations and second-order graph on
    # top (small at 16 px; at 224 px they are most of the memory: benchmarks/maml_step.py).
    assert plain > recomputed


# --------------------------------------------------------------------------- what is refused
def test_vmap_and_per_step_batchnorm_are_refused():
    with pytest.raises(ValueError, match="task_batching='sequential'"):
        MAML(build_model("conv4", "acdc-net"), recompute_inner_steps=True, task_batching="vmap")
    model = use_per_step_batchnorm(build_model("conv4", "acdc-net"), 2)
    with pytest.raises(ValueError, match="running statistics"):
        MAML(model, inner_steps=2, recompute_inner_steps=True)
    with pytest.raises(ValueError, match="recompute_inner_steps must be True or False"):
        MAML(build_model("conv4", "acdc-net"), recompute_inner_steps="yes")
    assert "recompute_inner_steps=True" in repr(MAML(build_model("conv4", "acdc-net"), recompute_inner_steps=True))
