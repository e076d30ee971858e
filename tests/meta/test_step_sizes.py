"""Inner-loop step sizes (fewshot_acdc.meta.step_sizes): per role, LSLR, Meta-SGD, multi-step loss.

Agreement with code nobody here wrote: Meta-SGD's meta-gradient (model and step sizes) against
learn2learn's ``MetaSGD`` (standard convs) and a higher ``innerloop_ctx`` with element-wise step
sizes (standard and ACDC-net: learn2learn's ``meta_sgd_update`` keeps no memo of tied tensors, so
it updates a shared coefficient tensor in one module only and cannot run ACDC-net), the multi-step loss against learn2learn's MAML scored after every
step (float64). LSLR with its rates frozen at equal values computes exactly plain MAML.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fewshot_acdc.meta import MAML
from fewshot_acdc.meta.references import (higher_meta_sgd_meta_gradient, learn2learn_meta_sgd_meta_gradient,
                                          learn2learn_multi_step_meta_gradient)
from fewshot_acdc.meta.step_sizes import InnerStepSizes, multi_step_weights, step_size
from fewshot_acdc.nn import parameter_roles
from .maml_testing import build_model, import_reference, max_relative_error, random_episode

TOLERANCE = 1e-6


def episodes(image_size=32):
    return [random_episode(seed, image_size=image_size) for seed in (11, 12)]


def meta_gradient(maml):
    maml.meta_gradient(episodes())
    return {name: p.grad.detach().clone() for name, p in maml.model.named_parameters()}


# --------------------------------------------------------------------------- per-role step sizes
def test_each_role_steps_with_its_own_rate():
    model = build_model("conv4", "acdc-net")
    rates = {"atoms": 1e-4, "head": 0.3, "default": 0.02}
    maml = MAML(model, scope="all", inner_lr=rates, inner_steps=1)
    episode = random_episode(3)
    params = maml.parameters()
    adapted = maml.adapt(params, episode.support_images, episode.support_labels, create_graph=False)
    loss = F.cross_entropy(model(episode.support_images), episode.support_labels)
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    roles = parameter_roles(model)
    assert {"atoms", "head", "coefficients", "norm"} <= set(roles.values())
    for name, tensor in params.items():
        expected = tensor - rates.get(roles[name], rates["default"]) * grads[name]
        torch.testing.assert_close(adapted[name], expected, rtol=0, atol=1e-12)


def test_one_number_means_every_role():
    one = meta_gradient(MAML(build_model("conv4", "acdc-net"), inner_lr=0.05, inner_steps=2))
    mapped = meta_gradient(MAML(build_model("conv4", "acdc-net"), inner_lr={"default": 0.05}, inner_steps=2))
    assert all(torch.equal(one[name], mapped[name]) for name in one)


def test_a_role_without_a_rate_or_an_unknown_role_is_named():
    with pytest.raises(ValueError, match="names no value for parameter role 'conv'"):
        MAML(build_model("conv4", "acdc-net"), scope="all", inner_lr={"atoms": 0.1, "head": 0.1,
                                                                     "coefficients": 0.1, "norm": 0.1})
    with pytest.raises(ValueError, match="did you mean 'atoms'"):
        MAML(build_model("conv4", "acdc-net"), inner_lr={"atom": 0.1, "default": 0.1})
    with pytest.raises(ValueError, match="finite number > 0"):
        MAML(build_model("conv4", "acdc-net"), inner_lr={"head": float("nan"), "default": 0.1})


def test_step_size_keeps_the_last_per_step_value_beyond_its_length():
    rates = {"w": (0.1, 0.2)}
    assert [step_size(rates, "w", step) for step in range(4)] == [0.1, 0.2, 0.2, 0.2]
    assert step_size(0.3, "anything", 7) == 0.3


# --------------------------------------------------------------------------- LSLR
def test_lslr_with_equal_frozen_rates_is_plain_maml_exactly():
    plain = meta_gradient(MAML(build_model("conv4", "acdc-net"), scope="all", inner_lr=0.05, inner_steps=3))
    lslr_maml = MAML(build_model("conv4", "acdc-net"), scope="all", inner_lr=0.05, inner_steps=3,
                     learn_inner_lr="lslr")
    lslr = meta_gradient(lslr_maml)
    assert all(torch.equal(plain[name], lslr[name]) for name in plain)
    rates = list(lslr_maml.step_sizes.parameters())
    assert len(rates) == len(lslr_maml.adapted_names) and all(rate.shape == (3,) for rate in rates)
    assert all(rate.grad is not None and rate.grad.abs().sum() > 0 for rate in rates)


def test_lslr_rate_gradient_is_the_derivative_of_the_meta_loss():
    """Finite differences of the meta-loss in one step size (float64)."""
    maml = MAML(build_model("conv4", "acdc-net"), scope="atoms+head", inner_lr={"atoms": 0.01, "head": 0.2},
                inner_steps=2, learn_inner_lr="lslr")
    maml.meta_gradient(episodes())
    rate = next(iter(maml.step_sizes.learned.values()))  # a scale of the initial step size
    analytic = float(rate.grad[1])
    eps = 1e-8  # larger steps cross ReLU/max-pool kinks of this small net (1e-4: 1.5% off)
    losses = []
    for sign in (1, -1):
        with torch.no_grad():
            rate[1] += sign * eps
        losses.append(maml.meta_gradient(episodes())["meta_loss"])
        with torch.no_grad():
            rate[1] -= sign * eps
    assert analytic == pytest.approx((losses[0] - losses[1]) / (2 * eps), rel=1e-5)


# --------------------------------------------------------------------------- Meta-SGD
META_SGD_REFERENCES = {"learn2learn": learn2learn_meta_sgd_meta_gradient, "higher": higher_meta_sgd_meta_gradient}
META_SGD_CASES = [(reference, backbone, conv, first_order)
                  for backbone in ("conv4", "resnet10") for conv in ("standard", "acdc-net")
                  for reference in ("learn2learn", "higher") for first_order in (False, True)
                  if not (reference == "learn2learn" and conv != "standard")]


@pytest.mark.reference
@pytest.mark.parametrize("reference, backbone, conv, first_order", META_SGD_CASES)
def test_meta_sgd_meta_gradient_matches_reference(reference, backbone, conv, first_order):
    import_reference(reference)
    maml = MAML(build_model(backbone, conv), scope="all", inner_lr=0.05, inner_steps=2, first_order=first_order,
                learn_inner_lr="meta-sgd")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # unequal step sizes, so that a mix-up of elements would show
        for rate in maml.step_sizes.parameters():
            rate.mul_(0.5 + torch.rand(rate.shape, generator=generator, dtype=rate.dtype))
    maml.meta_gradient(episodes())
    ours = {name: p.grad.detach().clone() for name, p in maml.model.named_parameters()}
    # learned as scales of the initial step size: d/d(rate) = d/d(scale) / initial
    our_rates = {name: maml.step_sizes.learned[name.replace(".", "__")].grad / maml.step_sizes.initial[name]
                 for name in maml.adapted_names}

    reference_model = build_model(backbone, conv)
    names = [name for name, _ in reference_model.named_parameters()]
    rates = [maml.step_sizes.rate(name) for name in names]
    their_rates = META_SGD_REFERENCES[reference](reference_model, episodes(), rates, 2, first_order)
    theirs = {name: p.grad.detach().clone() for name, p in reference_model.named_parameters()}
    assert max_relative_error(ours, theirs) <= TOLERANCE
    assert max_relative_error(our_rates, dict(zip(names, their_rates))) <= TOLERANCE


def test_meta_sgd_rates_are_per_element_and_evaluation_does_not_reach_them():
    maml = MAML(build_model("conv4", "acdc-net"), scope="atoms", inner_lr=0.01, learn_inner_lr="meta-sgd")
    shapes = {name: p.shape for name, p in maml.model.named_parameters()}
    assert {name: maml.step_sizes.learned[name.replace(".", "__")].shape for name in maml.adapted_names} == \
        {name: shapes[name] for name in maml.adapted_names}
    maml.evaluate_episode(random_episode(5))
    assert all(rate.grad is None for rate in maml.step_sizes.parameters())


def test_learned_rates_are_meta_parameters_and_round_trip_through_state_dict():
    maml = MAML(build_model("conv4", "acdc-net"), scope="all", inner_lr=0.05, inner_steps=2, learn_inner_lr="lslr")
    assert len(maml.meta_parameters()) == len(list(maml.model.parameters())) + len(maml.adapted_names)
    optimizer = torch.optim.Adam(maml.meta_parameters(), lr=1e-3)
    maml.meta_train_step(episodes(), optimizer)
    state = maml.state_dict()
    other = MAML(build_model("conv4", "acdc-net", seed=1), scope="all", inner_lr=0.05, inner_steps=2,
                 learn_inner_lr="lslr")
    other.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(maml.step_sizes.parameters(), other.step_sizes.parameters()))
    assert any(not torch.equal(other.step_sizes.rate(name), torch.full((2,), 0.05, dtype=torch.float64))
               for name in other.adapted_names)


def test_unknown_learned_step_size_kind_is_named():
    with pytest.raises(ValueError, match="learn_inner_lr must be one of none, lslr, meta-sgd"):
        MAML(build_model("conv4", "acdc-net"), learn_inner_lr="metasgd")
    model = build_model("conv4", "acdc-net")
    with pytest.raises(ValueError, match="did you mean 'meta-sgd'"):
        InnerStepSizes(dict(model.named_parameters()), parameter_roles(model), 0.1, learn="metasgd")


# --------------------------------------------------------------------------- multi-step loss
def test_multi_step_weights_start_uniform_sum_to_one_and_anneal_to_the_last_step():
    assert multi_step_weights(4, 0, 100) == pytest.approx((0.25,) * 4)
    for iteration in (0, 10, 50, 99, 100, 1000):
        assert sum(multi_step_weights(4, iteration, 100)) == pytest.approx(1.0)
    assert multi_step_weights(4, 100, 100) == pytest.approx((0.0075,) * 3 + (1 - 3 * 0.0075,))
    assert multi_step_weights(4, 50, 100)[0] < multi_step_weights(4, 10, 100)[0]
    assert multi_step_weights(3, 5, None) == (0.0, 0.0, 1.0)


@pytest.mark.reference
@pytest.mark.parametrize("task_batching", ["sequential", "vmap"])
@pytest.mark.parametrize("first_order", [False, True])
def test_multi_step_loss_matches_learn2learn_scored_after_every_step(first_order, task_batching):
    import_reference("learn2learn")
    maml = MAML(build_model("conv4", "acdc-net"), scope="all", inner_lr=0.05, inner_steps=3,
                first_order=first_order, multi_step_anneal=100, task_batching=task_batching)
    weights = maml.step_weights(30)
    assert len(set(weights)) == 2  # a mid-anneal mix, not plain MAML
    stats = maml.meta_gradient(episodes(), iteration=30)
    ours = {name: p.grad.detach().clone() for name, p in maml.model.named_parameters()}
    reference = build_model("conv4", "acdc-net")
    learn2learn_multi_step_meta_gradient(reference, episodes(), maml.adapted_names, 0.05, weights, first_order)
    theirs = {name: p.grad.detach().clone() for name, p in reference.named_parameters()}
    assert max_relative_error(ours, theirs) <= TOLERANCE
    assert stats["meta_loss"] > 0


def test_multi_step_loss_off_is_plain_maml():
    plain = meta_gradient(MAML(build_model("conv4", "acdc-net"), inner_lr=0.05, inner_steps=2))
    annealed = MAML(build_model("conv4", "acdc-net"), inner_lr=0.05, inner_steps=2, multi_step_anneal=10)
    annealed.meta_gradient(episodes(), iteration=10**6)  # long past the anneal: only the floor remains
    grads = {name: p.grad for name, p in annealed.model.named_parameters()}
    assert max_relative_error(grads, plain) < 0.05
    assert max_relative_error(grads, plain) > 0  # the 0.03/N floor of MAML++ keeps earlier steps in


# --------------------------------------------------------------------------- per-step BatchNorm
def test_per_step_batchnorm_with_one_step_is_plain_maml_and_with_more_uses_each_steps_weights():
    from fewshot_acdc.nn import use_per_step_batchnorm
    plain = meta_gradient(MAML(build_model("conv4", "acdc-net"), inner_lr=0.05, inner_steps=1))
    per_step = MAML(use_per_step_batchnorm(build_model("conv4", "acdc-net"), 1), inner_lr=0.05, inner_steps=1)
    grads = meta_gradient(per_step)
    for name in plain:  # a [1, C] BN weight row per step vs the plain [C] weight
        torch.testing.assert_close(grads[name].reshape(plain[name].shape), plain[name], rtol=1e-10, atol=1e-12)
    three = MAML(use_per_step_batchnorm(build_model("conv4", "acdc-net"), 3), inner_lr=0.05, inner_steps=3)
    grads = meta_gradient(three)
    norm = [name for name in grads if name.endswith("weight") and grads[name].dim() == 2 and grads[name].shape[0] == 3]
    assert norm and all(bool((grads[name].abs().sum(1) > 0).all()) for name in norm)  # every step's row is used
    buffers = [b for name, b in three.model.named_buffers() if name.endswith("running_mean")]
    assert all(bool((b.abs().sum(1) > 0).all()) for b in buffers)  # every step's statistics were updated
