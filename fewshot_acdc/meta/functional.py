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

from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .batchnorm import DecomposedBatchNorm

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
    if not adapted_names or not all(name.startswith("head.") for name in adapted_names):
        return False
    return not any(
        module.training and (isinstance(module, nn.modules.dropout._DropoutNd) or getattr(module, "atom_drop", 0) > 0)
        for module in model.modules()
    )


def _support_loss_function(model: nn.Module, params: Params, adapted_names: Sequence[str],
                           images: torch.Tensor, labels: torch.Tensor, steps: int):
    """``adapted params -> support loss``; with a frozen trunk, the support features are computed
    once (with their graph, so the meta-gradient still reaches every trunk parameter) and each
    step only runs the head."""
    if steps < 2 or not trunk_is_frozen(model, adapted_names):
        return lambda adapted: classification_loss(model, adapted, images, labels)
    trunk_params = {f"model.{name}": tensor for name, tensor in params.items() if not name.startswith("head.")}
    features = functional_call(_Embedding(model), trunk_params, (images,))
    head_names = [(name, name[len("head."):]) for name in params if name.startswith("head.")]

    def head_loss(adapted: Params) -> torch.Tensor:
        head_params = {local: adapted[name] for name, local in head_names}
        return F.cross_entropy(functional_call(model.head, head_params, (features,)), labels)
    return head_loss


def inner_loop(
    model: nn.Module,
    params: Params,
    adapted_names: Sequence[str],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    inner_lr: float,
    steps: int,
    create_graph: bool,
    track_meta_gradient: bool = True,
) -> Tuple[Params, torch.Tensor]:
    """``steps`` SGD steps on the support loss, updating only ``adapted_names``.

    Args:
        params: every parameter the model needs (name -> tensor). Not modified; the returned
            dict holds new tensors for the adapted names and the *same* tensor objects for the
            others, so frozen tensors stay bit identical.
        create_graph: keep the graph of each inner gradient (second-order MAML). ``False``:
            first-order, each inner gradient is a constant, and the meta-gradient reaching the
            initial parameters is the query gradient at the adapted parameters.
        track_meta_gradient: ``False`` when no meta-gradient is wanted (evaluation): each
            adapted tensor is detached after its update, so nothing links it to ``params``.

    Returns:
        ``(adapted_params, support_losses)``; ``support_losses[k]`` is the loss computed before
        update ``k + 1`` (detached, on the images' device). No host synchronisation happens here.
    """
    adapted = dict(params)
    losses = []
    with torch.enable_grad():  # a pure function: works even when called under no_grad
        for name in adapted_names:
            if not adapted[name].requires_grad:
                # Nothing upstream to differentiate into (e.g. evaluation): a fresh leaf.
                adapted[name] = adapted[name].detach().requires_grad_(True)
        support_loss = _support_loss_function(model, params, adapted_names, images, labels, steps)
        for _ in range(steps):
            loss = support_loss(adapted)
            targets = [adapted[name] for name in adapted_names]
            grads = torch.autograd.grad(loss, targets, create_graph=create_graph, allow_unused=True)
            for name, target, grad in zip(adapted_names, targets, grads):
                if grad is None:  # the support loss does not depend on it: nothing to change
                    continue
                updated = target - inner_lr * grad
                adapted[name] = updated if track_meta_gradient else updated.detach().requires_grad_(True)
            losses.append(loss.detach())
    support_losses = torch.stack(losses) if losses else images.new_zeros(0)
    return adapted, support_losses


def vmapped_meta_losses(
    model: nn.Module,
    params: Params,
    adapted_names: Sequence[str],
    support_images: torch.Tensor,
    support_labels: torch.Tensor,
    query_images: torch.Tensor,
    query_labels: torch.Tensor,
    *,
    inner_lr: float,
    steps: int,
    first_order: bool,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All tasks of a meta-batch at once with ``torch.func.vmap`` (episodes stacked on dim 0).

    Each task's inner gradient is ``torch.func.grad`` of its support loss with respect to the
    adapted tensors; the frozen ones are closed over, so ordinary autograd (the caller's
    ``backward``) differentiates through the whole inner loop into every initial parameter:
    second-order MAML, or first-order when the inner gradients are detached.

    Returns ``(query_losses [T], query_accuracies [T], support_losses [T, steps])``; only the
    query losses carry a graph. BatchNorm runs as elementary ops (:class:`DecomposedBatchNorm`:
    same function, but differentiated correctly to second order under vmap). Random ops (atom drop) use vmap's ``randomness="same"``: the
    tasks of one vmapped meta-batch share each forward's atom-drop mask.
    """
    frozen = {name: tensor for name, tensor in params.items() if name not in set(adapted_names)}
    initial = {name: params[name] for name in adapted_names}

    def support_loss(adapted: Params, images: torch.Tensor, labels: torch.Tensor):
        loss = classification_loss(model, {**frozen, **adapted}, images, labels)
        return loss, loss.detach()

    def one_task(s_images, s_labels, q_images, q_labels):
        adapted = initial
        losses = []
        for _ in range(steps):
            grads, loss = torch.func.grad(support_loss, has_aux=True)(adapted, s_images, s_labels)
            adapted = {name: adapted[name] - inner_lr * (grads[name].detach() if first_order else grads[name])
                       for name in adapted_names}
            losses.append(loss)
        query_loss, accuracy = score_query(model, {**frozen, **adapted}, q_images, q_labels)
        support = torch.stack(losses) if losses else s_images.new_zeros(0)
        return query_loss, accuracy, support

    with DecomposedBatchNorm():  # vmap's BN double-backward rule is wrong for adapted BN weights
        return torch.func.vmap(one_task, randomness="same")(support_images, support_labels,
                                                           query_images, query_labels)
