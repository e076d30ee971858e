"""The MAML inner loop as a pure function of (parameters, episode).

Parameters are a ``dict`` name -> tensor with the names of ``model.named_parameters()``; the
model is only the *program* (``torch.func.functional_call``), never mutated. A tied tensor
(an ACDC coefficient tensor shared by several layers) has one name, and ``functional_call``
(``tie_weights=True``) substitutes it in every layer that uses it; its inner-loop gradient is
therefore the sum over those layers and it is updated once per step, as one tensor.

Nothing here reads a tensor's value on the host: each step's support loss is returned
(detached, on the device) so the caller can check finiteness once, after the loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..nn.norm import has_per_step_batchnorm, inner_step
from ..nn.roles import HEAD_PREFIX, is_head_parameter
from .batchnorm import DecomposedBatchNorm
from .recompute import recomputed_inner_step
from .step_sizes import StepSizes, step_size

Params = Dict[str, torch.Tensor]


def classification_loss(model: nn.Module, params: Params, images: torch.Tensor,
                        labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(functional_call(model, params, (images,)), labels)


def score_query(model: nn.Module, params: Params, images: torch.Tensor,
                labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Query loss (differentiable if ``params`` are) and accuracy (a detached 0-dim tensor)."""
    logits = functional_call(model, params, (images,))
    loss = F.cross_entropy(logits, labels)
    accuracy = (logits.detach().argmax(dim=1) == labels).to(logits.dtype).mean()
    return loss, accuracy


class _Embedding(nn.Module):
    """``model.embed`` as a module's forward, for ``functional_call`` (parameters under ``model.``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.embed(images)


def trunk_is_frozen(model: nn.Module, adapted_names: Sequence[str]) -> bool:
    """Whether the inner loop only changes the classifier of a deterministic feature extractor.

    Then the support features are the same at every inner step and can be computed once: the
    ``head`` scope (ANIL-style). Not when a layer draws randomness per forward in this mode
    (atom drop, dropout): recomputing draws a new mask per step, a cached forward would not.
    """
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module) or not callable(getattr(model, "embed", None)):
        return False
    if not adapted_names or not all(map(is_head_parameter, adapted_names)):
        return False
    if has_per_step_batchnorm(model):  # each step normalises with its own BN weights and statistics
        return False
    return not any(
        module.training and (isinstance(module, nn.modules.dropout._DropoutNd) or getattr(module, "atom_drop", 0) > 0)
        for module in model.modules()
    )


def _computes_features_once(model: nn.Module, adapted_names: Sequence[str], steps: int) -> bool:
    return steps >= 2 and trunk_is_frozen(model, adapted_names)


def _support_loss_function(model: nn.Module, params: Params, adapted_names: Sequence[str],
                           images: torch.Tensor, labels: torch.Tensor, steps: int):
    """``adapted params -> support loss``; with a frozen trunk, the support features are computed
    once (with their graph, so the meta-gradient still reaches every trunk parameter) and each
    step only runs the head."""
    if not _computes_features_once(model, adapted_names, steps):
        return lambda adapted: classification_loss(model, adapted, images, labels)
    trunk_params = {f"model.{name}": tensor for name, tensor in params.items() if not is_head_parameter(name)}
    features = functional_call(_Embedding(model), trunk_params, (images,))
    head_names = [(name, name[len(HEAD_PREFIX):]) for name in params if is_head_parameter(name)]

    def head_loss(adapted: Params) -> torch.Tensor:
        head_params = {local: adapted[name] for name, local in head_names}
        return F.cross_entropy(functional_call(model.head, head_params, (features,)), labels)
    return head_loss


@dataclass
class InnerLoopResult:
    """What :func:`adapt_steps` computed, all on the device (nothing read on the host).

    ``adapted``: the final parameters; ``trajectory[k]``: the parameters after step ``k + 1``
    (only with ``keep_trajectory``; the multi-step loss scores each); ``final_support_loss``:
    the support loss at the adapted parameters (only with ``score_final_support``; no graph);
    ``support_losses[k]``: the
    support loss before update ``k + 1`` (detached); ``gradient_norms[k, i]``: the norm of the
    inner gradient of ``adapted_names[i]`` at step ``k + 1`` (detached; 0 where it has none).
    """
    adapted: Params
    support_losses: torch.Tensor
    gradient_norms: torch.Tensor
    trajectory: List[Params] = field(default_factory=list)
    final_support_loss: Optional[torch.Tensor] = None


def adapt_steps(
    model: nn.Module,
    params: Params,
    adapted_names: Sequence[str],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    inner_lr: StepSizes,
    steps: int,
    create_graph: bool,
    track_meta_gradient: bool = True,
    keep_trajectory: bool = False,
    score_final_support: bool = False,
    recompute: bool = False,
) -> InnerLoopResult:
    """``steps`` SGD steps on the support loss, updating only ``adapted_names``.

    Args:
        params: every parameter the model needs (name -> tensor). Not modified; the returned
            dicts hold new tensors for the adapted names and the *same* tensor objects for the
            others, so frozen tensors stay bit identical.
        inner_lr: one step size for every tensor, or name -> step size (a float, a tensor that
            is 0-dim or shaped like the parameter, or a tuple of them indexed by step):
            :mod:`fewshot_acdc.meta.step_sizes`. Tensors that require grad are meta-learned:
            the meta-gradient reaches them through every update they scale.
        create_graph: keep the graph of each inner gradient (second-order MAML). ``False``:
            first-order, each inner gradient is a constant, and the meta-gradient reaching the
            initial parameters is the query gradient at the adapted parameters.
        track_meta_gradient: ``False`` when no meta-gradient is wanted (evaluation): each
            adapted tensor is detached after its update, so nothing links it to ``params``.
        keep_trajectory: also return the parameters after every step.
        score_final_support: also compute the support loss after the last step (one forward
            without graph): whether the inner loop fits the support set at all.
        recompute: second order in bounded memory (:mod:`fewshot_acdc.meta.recompute`): each
            step keeps no graph and is run again, with its graph, in the backward pass; the same
            meta-gradient. Only where there is a second-order graph to drop (``create_graph``
            and ``track_meta_gradient``) and the support loss is a whole forward (not the
            head-only steps on features computed once, whose graph is the head's alone).
            Per-step BatchNorm is refused: recomputing would update its running statistics twice.
    """
    adapted = dict(params)
    losses, norms, trajectory = [], [], []
    recompute = recompute and create_graph and track_meta_gradient
    if recompute and has_per_step_batchnorm(model):
        raise ValueError("recomputed inner steps would update per-step BatchNorm's running statistics twice "
                         "(in the step and again in its recomputation); use the plain second-order path")
    with torch.enable_grad():  # a pure function: works even when called under no_grad
        for name in adapted_names:
            if not adapted[name].requires_grad:
                # Nothing upstream to differentiate into (e.g. evaluation): a fresh leaf.
                adapted[name] = adapted[name].detach().requires_grad_(True)
        support_loss = _support_loss_function(model, params, adapted_names, images, labels, steps)
        # The head-only loss closes over features that carry a graph; a recomputed step passes on
        # the meta-gradient of its explicit inputs only, so it would cut that graph.
        recompute = recompute and not _computes_features_once(model, adapted_names, steps)
        for step in range(steps):
            run = _sgd_step(support_loss, adapted_names, step)
            sizes = {name: step_size(inner_lr, name, step) for name in adapted_names}
            if recompute:
                changed, loss, step_norms = recomputed_inner_step(run, model, adapted, adapted_names, sizes)
            else:
                changed, loss, step_norms = run(adapted, sizes, create_graph)
            norms.append(step_norms.detach())
            for name, updated in changed.items():
                adapted[name] = updated if track_meta_gradient else updated.detach().requires_grad_(True)
            losses.append(loss.detach())
            if keep_trajectory:
                trajectory.append(dict(adapted))
        final = None
        if score_final_support:
            with torch.no_grad(), inner_step(max(steps - 1, 0)):
                final = support_loss(adapted).detach()
    support_losses = torch.stack(losses) if losses else images.new_zeros(0)
    gradient_norms = torch.stack(norms) if norms else images.new_zeros(0, len(adapted_names))
    return InnerLoopResult(adapted, support_losses, gradient_norms, trajectory, final)


def _sgd_step(support_loss: Callable[[Params], torch.Tensor], adapted_names: Sequence[str], step: int):
    """Inner step ``step`` as a pure function ``(params, step sizes, create_graph) -> (updated
    tensors by name, support loss, inner gradient norm per adapted tensor)``: what the plain path
    runs once and a recomputed step (:func:`~fewshot_acdc.meta.recompute.recomputed_inner_step`)
    runs again in the backward pass."""
    def run(params: Params, sizes: Dict[str, object], create_graph: bool):
        with inner_step(step):
            loss = support_loss(params)
        targets = [params[name] for name in adapted_names]
        grads = torch.autograd.grad(loss, targets, create_graph=create_graph, allow_unused=True)
        norms = torch.stack([torch.linalg.vector_norm(grad.detach()) if grad is not None else loss.new_zeros(())
                             for grad in grads])
        updated = {name: target - sizes[name] * grad for name, target, grad in zip(adapted_names, targets, grads)
                   if grad is not None}  # no gradient: the support loss does not depend on it, nothing to change
        return updated, loss, norms
    return run


def inner_loop(
    model: nn.Module,
    params: Params,
    adapted_names: Sequence[str],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    inner_lr: StepSizes,
    steps: int,
    create_graph: bool,
    track_meta_gradient: bool = True,
    recompute: bool = False,
) -> Tuple[Params, torch.Tensor]:
    """:func:`adapt_steps` returning ``(adapted_params, support_losses)``; ``support_losses[k]``
    is the loss computed before update ``k + 1`` (detached, on the images' device). No host
    synchronisation happens here."""
    result = adapt_steps(model, params, adapted_names, images, labels, inner_lr=inner_lr, steps=steps,
                         create_graph=create_graph, track_meta_gradient=track_meta_gradient, recompute=recompute)
    return result.adapted, result.support_losses


def weighted_query_loss(model: nn.Module, result: InnerLoopResult, query_images: torch.Tensor,
                        query_labels: torch.Tensor,
                        step_weights: Optional[Sequence[float]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Query loss after adaptation, or MAML++'s multi-step loss ``sum_k w_k * L_query(theta_k)``
    when ``step_weights`` (one per step, from ``result.trajectory``) are given; the accuracy is
    always that of the final parameters."""
    with inner_step(max(result.support_losses.shape[0] - 1, 0)):  # the step the last update belongs to
        loss, accuracy = score_query(model, result.adapted, query_images, query_labels)
    if step_weights is None:
        return loss, accuracy
    if len(step_weights) != len(result.trajectory):
        raise ValueError(f"{len(step_weights)} multi-step weights for {len(result.trajectory)} inner steps")
    total = step_weights[-1] * loss
    for step, (weight, params) in enumerate(zip(step_weights[:-1], result.trajectory[:-1])):
        if weight:
            with inner_step(step):
                total = total + weight * score_query(model, params, query_images, query_labels)[0]
    return total, accuracy


def split_adapted(params: Params, adapted_names: Sequence[str]) -> Tuple[Params, Params]:
    """``(frozen, adapted)``: the tensors the inner loop keeps and those it updates."""
    adapted = set(adapted_names)
    return ({name: tensor for name, tensor in params.items() if name not in adapted},
            {name: params[name] for name in adapted_names})


def functional_adapt_steps(
    model: nn.Module,
    frozen: Params,
    initial: Params,
    adapted_names: Sequence[str],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    inner_lr: StepSizes,
    steps: int,
    first_order: bool,
) -> Tuple[Params, List[Params], List[torch.Tensor], List[torch.Tensor]]:
    """One task's inner loop in ``torch.func`` form, so that ``torch.func.vmap`` can batch it over
    tasks (meta-training: :func:`vmapped_meta_losses`; evaluation: :func:`vmapped_evaluation`).

    Each step's gradient is ``torch.func.grad`` of the support loss with respect to the adapted
    tensors only; ``frozen`` and the step sizes are closed over, so the caller's autograd still
    differentiates through every update (unless ``first_order``, where the inner gradients are
    constants). Each forward runs as its inner step (:func:`inner_step`, for per-step BatchNorm),
    and a frozen trunk's support features are computed once (:func:`_support_loss_function`).

    Returns ``(adapted, trajectory, support_losses, gradient_norms)``: the final adapted tensors,
    the adapted tensors after each step, and per step the support loss before the update and the
    inner gradient's norm per tensor (both detached), as lists.
    """
    support_loss = _support_loss_function(model, {**frozen, **initial}, adapted_names, images, labels, steps)

    def loss_and_value(adapted: Params):
        loss = support_loss({**frozen, **adapted})
        return loss, loss.detach()

    gradient = torch.func.grad(loss_and_value, has_aux=True)
    adapted, trajectory, losses, norms = initial, [], [], []
    for step in range(steps):
        with inner_step(step):
            grads, loss = gradient(adapted)
        adapted = {name: adapted[name] - step_size(inner_lr, name, step)
                   * (grads[name].detach() if first_order else grads[name]) for name in adapted_names}
        trajectory.append(adapted)
        losses.append(loss)
        norms.append(torch.stack([torch.linalg.vector_norm(grads[name].detach()) for name in adapted_names]))
    return adapted, trajectory, losses, norms


def vmapped_meta_losses(
    model: nn.Module,
    params: Params,
    adapted_names: Sequence[str],
    support_images: torch.Tensor,
    support_labels: torch.Tensor,
    query_images: torch.Tensor,
    query_labels: torch.Tensor,
    *,
    inner_lr: StepSizes,
    steps: int,
    first_order: bool,
    step_weights: Optional[Sequence[float]] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """All tasks of a meta-batch at once with ``torch.func.vmap`` (episodes stacked on dim 0).

    Each task's inner loop is :func:`functional_adapt_steps`: ordinary autograd (the caller's
    ``backward``) differentiates through the whole inner loop into every initial parameter and
    learned step size: second-order MAML, or first-order when the inner gradients are detached.

    Returns ``(query_losses [T], query_accuracies [T], support_losses [T, steps + 1]`` (before each
    update, then after the last),
    ``gradient_norms [T, steps, tensors])``; only the query losses carry a graph (the multi-step
    loss when ``step_weights`` are given). BatchNorm runs as elementary ops
    (:class:`DecomposedBatchNorm`: same function, but differentiated correctly to second order
    under vmap). Random ops (atom drop) use vmap's ``randomness="same"``: the tasks of one vmapped
    meta-batch share each forward's atom-drop mask.
    """
    frozen, initial = split_adapted(params, adapted_names)

    def one_task(s_images, s_labels, q_images, q_labels):
        adapted, trajectory, losses, norms = functional_adapt_steps(
            model, frozen, initial, adapted_names, s_images, s_labels, inner_lr=inner_lr, steps=steps,
            first_order=first_order)
        with inner_step(max(steps - 1, 0)):
            query_loss, accuracy = score_query(model, {**frozen, **adapted}, q_images, q_labels)
            with torch.no_grad():  # the support loss after the last update (diagnostics)
                losses.append(classification_loss(model, {**frozen, **adapted}, s_images, s_labels).detach())
        if step_weights is not None:
            query_loss = step_weights[-1] * query_loss
            for step, weight in enumerate(step_weights[:-1]):
                if weight:
                    with inner_step(step):
                        query_loss = query_loss + weight * score_query(
                            model, {**frozen, **trajectory[step]}, q_images, q_labels)[0]
        support = torch.stack(losses)
        gradient_norms = torch.stack(norms) if norms else s_images.new_zeros(0, len(adapted_names))
        return query_loss, accuracy, support, gradient_norms

    with DecomposedBatchNorm():  # vmap's BN double-backward rule is wrong for adapted BN weights
        return torch.func.vmap(one_task, randomness="same")(support_images, support_labels,
                                                           query_images, query_labels)


def vmapped_evaluation(
    model: nn.Module,
    params: Params,
    adapted_names: Sequence[str],
    support_images: torch.Tensor,
    support_labels: torch.Tensor,
    query_images: torch.Tensor,
    query_labels: torch.Tensor,
    *,
    inner_lr: StepSizes,
    steps: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Evaluation adaptation of several episodes at once (stacked on dim 0) with ``torch.func.vmap``.

    The same computation as :func:`inner_loop` without a meta-gradient followed by
    :func:`score_query` under ``no_grad`` (:meth:`MAML.evaluate_episode`), per episode: first-order
    steps from ``params`` (which should be detached), the query scored after the last one.
    Why batch: one evaluation episode is a few small forwards and backwards, and a vmapped stack
    of episodes is the same number of larger operations, which fill a GPU better. BatchNorm keeps
    torch's own kernel here, not :class:`DecomposedBatchNorm`: its vmap rule is wrong only for the
    *double* backward, and evaluation takes first-order steps (tests/meta/test_maml_evaluation.py
    compares with sequential evaluation, BN weights adapted or not); the elementary ops cost a third
    of the batched time on a CPU. Random ops draw independently per episode
    (``randomness="different"``; evaluation runs in eval mode, where none should run).

    Returns ``(query_losses [T], query_accuracies [T], support_losses [T, steps])``, all detached;
    ``support_losses[t, k]`` is episode ``t``'s support loss before update ``k + 1``.
    """
    frozen, initial = split_adapted(params, adapted_names)

    def one_episode(s_images, s_labels, q_images, q_labels):
        adapted, _, losses, _ = functional_adapt_steps(
            model, frozen, initial, adapted_names, s_images, s_labels, inner_lr=inner_lr, steps=steps,
            first_order=True)
        with inner_step(max(steps - 1, 0)):
            loss, accuracy = score_query(model, {**frozen, **adapted}, q_images, q_labels)
        support = torch.stack(losses) if losses else s_images.new_zeros(0)
        return loss.detach(), accuracy, support

    # no_grad: nothing outside torch.func.grad needs a graph (grad ignores an enclosing no_grad).
    with torch.no_grad():
        return torch.func.vmap(one_episode, randomness="different")(support_images, support_labels,
                                                                    query_images, query_labels)
