"""The same meta-gradient computed with learn2learn's MAML and with higher's innerloop_ctx.

Both are written the way their documentation shows MAML, with the minimum needed to adapt a
subset of parameters:

* learn2learn 0.2.0: ``MAML(model, lr).clone()``; ``adapt(loss)`` when every parameter is adapted,
  otherwise ``maml_update(module, lr, grads)`` with ``None`` for the frozen parameters (it then
  leaves them as they are). Its ``clone_module``/``update_module`` keep tied tensors tied (memo).
* higher 0.2.1: ``innerloop_ctx(model, SGD(adapted parameters), copy_initial_weights=False,
  track_higher_grads=not first_order)``; parameters outside the inner optimizer are not updated,
  tied tensors are deduplicated through its parameter mapping. First order: higher detaches the
  updated fast weights, so the query gradient at the adapted fast weights is added to the
  initial parameters by hand (its documented FOMAML recipe); frozen tensors still receive their
  direct gradient through the patched module.

Each leaves the meta-gradient (mean over the episodes) in ``model``'s ``.grad`` fields, as
:meth:`MAML.meta_train_step` does before its optimizer step. The agreement tests
(tests/meta/test_maml_agreement.py) and the speed benchmark (benchmarks/maml_step.py) both call
these, so the benchmark times exactly the computation the tests check. learn2learn and higher
are optional (the ``reference`` extra); they are imported on first use.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F


def import_quietly(name: str):
    """Import learn2learn or higher; learn2learn's import of gym prints a deprecation notice."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return __import__(name)


def learn2learn_meta_gradient(model, episodes: Sequence, adapted_names: Sequence[str], inner_lr: float,
                              steps: int, first_order: bool) -> None:
    l2l = import_quietly("learn2learn")
    adapted = set(adapted_names)
    adapt_everything = adapted == {name for name, _ in model.named_parameters()}
    wrapper = l2l.algorithms.MAML(model, lr=inner_lr, first_order=first_order)
    model.zero_grad(set_to_none=True)
    for episode in episodes:
        learner = wrapper.clone()
        for _ in range(steps):
            loss = F.cross_entropy(learner(episode.support_images), episode.support_labels)
            if adapt_everything:
                learner.adapt(loss)
                continue
            named = list(learner.module.named_parameters())
            grads = iter(torch.autograd.grad(loss, [p for name, p in named if name in adapted],
                                             create_graph=not first_order, retain_graph=not first_order))
            learner.module = l2l.algorithms.maml_update(
                learner.module, inner_lr, [next(grads) if name in adapted else None for name, _ in named])
        query_loss = F.cross_entropy(learner(episode.query_images), episode.query_labels)
        (query_loss / len(episodes)).backward()


def higher_meta_gradient(model, episodes: Sequence, adapted_names: Sequence[str], inner_lr: float,
                         steps: int, first_order: bool) -> None:
    higher = import_quietly("higher")
    adapted = set(adapted_names)
    named = list(model.named_parameters())
    inner_optimizer = torch.optim.SGD([p for name, p in named if name in adapted], lr=inner_lr)
    model.zero_grad(set_to_none=True)
    for episode in episodes:
        with higher.innerloop_ctx(model, inner_optimizer, copy_initial_weights=False,
                                  track_higher_grads=not first_order) as (fmodel, diffopt):
            for _ in range(steps):
                diffopt.step(F.cross_entropy(fmodel(episode.support_images), episode.support_labels))
            query_loss = F.cross_entropy(fmodel(episode.query_images), episode.query_labels) / len(episodes)
            query_loss.backward()
            if first_order:
                for (name, parameter), fast in zip(named, fmodel.parameters()):
                    if name in adapted:
                        parameter.grad = fast.grad.clone() if parameter.grad is None else parameter.grad + fast.grad


def learn2learn_meta_sgd_meta_gradient(model, episodes: Sequence, learning_rates: Sequence[torch.Tensor],
                                       steps: int, first_order: bool) -> list:
    """Meta-SGD with learn2learn's ``MetaSGD`` (every parameter adapted, one learned step size per
    element): the model's meta-gradient is left in its ``.grad`` fields; the step sizes'
    meta-gradients are returned, in ``model.parameters()`` order."""
    l2l = import_quietly("learn2learn")
    lrs = torch.nn.ParameterList([torch.nn.Parameter(rate.detach().clone()) for rate in learning_rates])
    wrapper = l2l.algorithms.MetaSGD(model, first_order=first_order, lrs=lrs)
    model.zero_grad(set_to_none=True)
    for episode in episodes:
        learner = wrapper.clone()
        for _ in range(steps):
            learner.adapt(F.cross_entropy(learner(episode.support_images), episode.support_labels))
        query_loss = F.cross_entropy(learner(episode.query_images), episode.query_labels)
        (query_loss / len(episodes)).backward()
    return [rate.grad.detach().clone() for rate in lrs]


def higher_meta_sgd_meta_gradient(model, episodes: Sequence, learning_rates: Sequence[torch.Tensor],
                                  steps: int, first_order: bool) -> list:
    """Meta-SGD with higher: one SGD parameter group per parameter and, through ``override``, a
    learned element-wise step size per group (``p - lr * g`` broadcasts). Needed next to
    learn2learn's ``MetaSGD`` because its ``meta_sgd_update`` has no memo for tied tensors: a
    shared ACDC coefficient tensor is updated in the first module holding it and left stale in the
    others. Same outputs as :func:`learn2learn_meta_sgd_meta_gradient`."""
    higher = import_quietly("higher")
    lrs = [rate.detach().clone().requires_grad_(True) for rate in learning_rates]
    inner_optimizer = torch.optim.SGD([{"params": [p]} for p in model.parameters()], lr=1.0)
    model.zero_grad(set_to_none=True)
    for episode in episodes:
        with higher.innerloop_ctx(model, inner_optimizer, copy_initial_weights=False,
                                  track_higher_grads=True, override={"lr": lrs}) as (fmodel, diffopt):
            for _ in range(steps):
                loss = F.cross_entropy(fmodel(episode.support_images), episode.support_labels)
                if first_order:  # the inner gradient as a constant, the step sizes still differentiable
                    fast = list(fmodel.parameters())
                    grads = torch.autograd.grad(loss, fast)
                    fmodel.update_params([p - lr * g.detach() for p, lr, g in zip(fast, lrs, grads)])
                else:
                    diffopt.step(loss)
            query_loss = F.cross_entropy(fmodel(episode.query_images), episode.query_labels) / len(episodes)
            query_loss.backward()
    return [rate.grad.detach().clone() for rate in lrs]


def learn2learn_multi_step_meta_gradient(model, episodes: Sequence, adapted_names: Sequence[str], inner_lr: float,
                                         step_weights: Sequence[float], first_order: bool) -> None:
    """MAML++'s multi-step loss (``sum_k w_k * query loss after step k``) with learn2learn's MAML,
    every parameter adapted; the meta-gradient is left in ``model``'s ``.grad`` fields."""
    l2l = import_quietly("learn2learn")
    wrapper = l2l.algorithms.MAML(model, lr=inner_lr, first_order=first_order)
    model.zero_grad(set_to_none=True)
    for episode in episodes:
        learner = wrapper.clone()
        total = 0.0
        for weight in step_weights:
            learner.adapt(F.cross_entropy(learner(episode.support_images), episode.support_labels))
            total = total + weight * F.cross_entropy(learner(episode.query_images), episode.query_labels)
        (total / len(episodes)).backward()


REFERENCE_META_GRADIENTS = {"learn2learn": learn2learn_meta_gradient, "higher": higher_meta_gradient}
