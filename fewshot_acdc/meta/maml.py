"""MAML (Finn et al. 2017) on functional parameters, for backbones with ACDC convolutions.

Inner loop
    A pure function of (parameters, episode) built on ``torch.func.functional_call``
    (:func:`fewshot_acdc.meta.functional.inner_loop`): the module is never mutated, tied tensors
    stay tied, and a shared ACDC coefficient tensor is one tensor with one name, so its inner
    gradient sums over every layer using it and it is updated once per step.

Scopes (``scope=``, see :mod:`fewshot_acdc.meta.scopes`)
    ``all`` adapts every parameter (classic MAML); ``atoms`` only the ACDC dictionary atoms
    (coefficients, BN, convs and head are meta-learned in the outer loop but frozen within a
    task: the returned parameter dict holds the very same tensors for them); ``head`` and
    ``atoms+head``. A scope that selects nothing (``atoms`` on a standard-conv backbone) is a
    ``ValueError`` at construction.

First and second order
    Second order (default) keeps each inner gradient's graph, and the meta-gradient is the exact
    derivative of the query loss after adaptation with respect to the initial parameters,
    including the curvature terms and, for frozen tensors, their influence on the inner
    gradients. ``first_order=True`` treats the inner gradients as constants: the meta-gradient
    of an adapted tensor is the query gradient at the adapted parameters, that of a frozen tensor
    its direct query gradient. Tasks of a meta-batch are averaged.

Task batching
    ``sequential`` (default) adapts and back-propagates one task at a time, so only one task's
    graph is alive: memory does not grow with the meta-batch (what makes second-order ResNet34
    with 5 inner steps fit). ``vmap`` runs the whole meta-batch as one ``torch.func.vmap``
    program (episodes must have equal shapes; memory grows with the meta-batch); it is meant for
    small backbones on a GPU, where one task does not fill the device (not measured yet: no GPU
    here). On a CPU it is slower: Conv4 ACDC-net, 84 px, meta-batch 4, second order took 2.2x the
    time and 4x the peak memory of ``sequential``. Under vmap BatchNorm is computed
    from elementary ops, because torch's batching rule for BN's double backward is wrong when the
    BN weights are adapted (:class:`~fewshot_acdc.meta.batchnorm.DecomposedBatchNorm`); atom-drop
    masks are shared by the tasks of one vmapped meta-batch (``randomness="same"``).

Head-only adaptation
    With the ``head`` scope and a deterministic trunk (no atom drop or dropout active), the
    support features are the same at every inner step: they are computed once per task, with
    their graph, and each inner step runs only the classifier (ANIL-style; the meta-gradient is
    unchanged, tests compare it with learn2learn and higher). learn2learn and higher recompute
    the whole network every step.

Evaluation
    :meth:`MAML.evaluate_episode` adapts ``inner_steps_eval`` steps from detached parameters
    without any second-order graph (each adapted tensor is detached after its update) and scores
    the query set under ``torch.no_grad()``.

BatchNorm and ``train()``/``eval()``
    MAML backbones are built with ``track_running_stats=False``: BatchNorm normalizes with the
    statistics of the batch it sees, in the inner loop (the support set) and on the query set:
    transductive, as the reference MAML implementations (Finn et al.; learn2learn and higher
    examples). Such layers have no running buffers, so inner-loop forwards cannot corrupt any; a
    model whose normalization layers track running statistics is refused with a ``ValueError``
    rather than silently updating them (:mod:`fewshot_acdc.meta.batchnorm`). Consequently
    ``model.eval()`` after training does **not** switch BatchNorm to stored statistics (there are
    none); it only turns off ACDC atom drop. Predictions depend on the batch they are computed
    with: score a whole query set at once, as :meth:`evaluate_episode` does. Meta-training runs the
    model in training mode (atom drop active), evaluation in eval mode; both restore the mode the
    model had.

Non-finite losses, without a host sync per inner step
    Each inner step's support loss is kept (detached) on the device. After the meta-batch's
    backward passes, the losses, accuracies and gradient norm are copied to the host in one
    transfer: the meta-step's single synchronisation. If any loss is NaN/Inf, the first one (by
    task, then step) is named in a :class:`NonFiniteLossError`, the gradients are cleared and
    ``optimizer.step()`` is not called. Episodes are validated before the inner loop
    (:class:`EpisodeError`); label ranges are read on the CPU when the labels are there.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .batchnorm import check_no_running_stats
from .episodes import Episode, check_label_ranges, check_support_set, prepare_episodes
from .errors import EpisodeError, NonFiniteLossError
from .functional import Params, inner_loop, score_query, vmapped_meta_losses
from .scopes import adapted_parameter_names, check_scope

TASK_BATCHING = ("sequential", "vmap")


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@contextmanager
def module_mode(model: nn.Module, training: bool) -> Iterator[None]:
    """Run in training or eval mode, then restore every submodule's own previous mode."""
    previous = [(module, module.training) for module in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for module, was_training in previous:
            module.training = was_training


def _infer_n_way(model: nn.Module) -> int:
    head = getattr(model, "head", None)
    out_features = getattr(head, "out_features", None)
    if not _is_integer(out_features):
        raise ValueError(
            f"cannot tell how many classes this {type(model).__name__} predicts (no head.out_features); "
            f"pass n_way= to MAML"
        )
    return out_features


class MAML:
    """Model-agnostic meta-learning with a functional inner loop (see the module docstring).

    Args:
        model: the backbone (its parameters are the meta-parameters). Built with
            ``track_running_stats=False``; a model tracking running statistics is refused.
        scope: ``all``, ``atoms``, ``head`` or ``atoms+head``: what the inner loop adapts.
        inner_lr: inner-loop SGD learning rate (> 0).
        inner_steps: inner steps during meta-training (>= 1).
        inner_steps_eval: inner steps in :meth:`evaluate_episode` (>= 0; 0 scores the
            meta-learned initialization without adaptation).
        first_order: first-order MAML (inner gradients treated as constants).
        task_batching: ``sequential`` (one task graph alive at a time) or ``vmap``.
        n_way: classes per episode; default ``model.head.out_features``.
    """

    def __init__(self, model: nn.Module, scope: str = "all", inner_lr: float = 0.01, inner_steps: int = 5,
                 inner_steps_eval: int = 10, first_order: bool = False, task_batching: str = "sequential",
                 n_way: Optional[int] = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_scope(scope)
        if isinstance(inner_lr, bool) or not isinstance(inner_lr, (int, float)) \
                or not math.isfinite(inner_lr) or inner_lr <= 0:
            raise ValueError(f"inner_lr must be a finite number > 0, got {inner_lr!r}")
        if not _is_integer(inner_steps) or inner_steps < 1:
            raise ValueError(f"inner_steps must be an integer >= 1, got {inner_steps!r}")
        if not _is_integer(inner_steps_eval) or inner_steps_eval < 0:
            raise ValueError(f"inner_steps_eval must be an integer >= 0, got {inner_steps_eval!r}")
        if not isinstance(first_order, bool):
            raise ValueError(f"first_order must be True or False, got {first_order!r}")
        if task_batching not in TASK_BATCHING:
            raise ValueError(f"task_batching must be one of {', '.join(TASK_BATCHING)}, got {task_batching!r}")
        if n_way is not None and (not _is_integer(n_way) or n_way < 1):
            raise ValueError(f"n_way must be a positive integer, got {n_way!r}")
        check_no_running_stats(model)
        self.model = model
        self.scope = scope
        self.inner_lr = float(inner_lr)
        self.inner_steps = inner_steps
        self.inner_steps_eval = inner_steps_eval
        self.first_order = first_order
        self.task_batching = task_batching
        self.n_way = n_way if n_way is not None else _infer_n_way(model)
        self.adapted_names: List[str] = adapted_parameter_names(model, scope)
        sizes = {name: p.numel() for name, p in model.named_parameters()}
        self.adapted_parameter_count: int = sum(sizes[name] for name in self.adapted_names)

    def __repr__(self) -> str:
        return (f"MAML({type(self.model).__name__}, scope={self.scope!r}, inner_lr={self.inner_lr}, "
                f"inner_steps={self.inner_steps}, inner_steps_eval={self.inner_steps_eval}, "
                f"first_order={self.first_order}, task_batching={self.task_batching!r}, "
                f"adapted {self.adapted_parameter_count:,} parameters in {len(self.adapted_names)} tensors)")

    # ------------------------------------------------------------------ helpers
    def _reference_parameter(self) -> torch.Tensor:
        return next(self.model.parameters())

    def parameters(self) -> Dict[str, torch.Tensor]:
        """The meta-parameters as a dict (tied tensors once), the input :meth:`adapt` expects."""
        return dict(self.model.named_parameters())

    # ------------------------------------------------------------------ pure inner loop
    def adapt(self, params: Params, support_images: torch.Tensor, support_labels: torch.Tensor, *,
              steps: Optional[int] = None, create_graph: Optional[bool] = None,
              check_finite: bool = True) -> Params:
        """Adapt ``params`` (name -> tensor, e.g. :meth:`parameters`) on one support set.

        Returns a new dict: adapted tensors for the scope's names, the same tensor objects for
        the rest. ``steps`` defaults to ``inner_steps``; ``create_graph`` to second order unless
        ``first_order``. Runs in the model's current train/eval mode. With ``check_finite`` the
        support losses are read once after the loop and a NaN/Inf one raises
        :class:`NonFiniteLossError` naming its step.
        """
        steps = self.inner_steps if steps is None else steps
        if not _is_integer(steps) or steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        create_graph = (not self.first_order) if create_graph is None else create_graph
        missing = [name for name in self.adapted_names if name not in params]
        if missing:
            raise ValueError(f"params lacks {len(missing)} tensor(s) the {self.scope!r} scope adapts, "
                             f"e.g. {missing[0]!r}; pass the full dict of model.named_parameters()")
        check_support_set(support_images, support_labels)
        check_label_ranges([support_labels], ["support_labels"], [None], self.n_way)
        reference = params[self.adapted_names[0]]
        images = support_images.to(device=reference.device, dtype=reference.dtype, non_blocking=True)
        labels = support_labels.to(device=reference.device, dtype=torch.int64, non_blocking=True)
        adapted, support_losses = inner_loop(self.model, params, self.adapted_names, images, labels,
                                             inner_lr=self.inner_lr, steps=steps, create_graph=create_graph)
        if check_finite:
            losses = support_losses.cpu().tolist()  # the one synchronisation, after the loop
            self._raise_if_nonfinite([losses], [0.0], steps, during_meta_step=False, in_meta_batch=False)
        return adapted

    # ------------------------------------------------------------------ meta-training
    def meta_train_step(self, episodes: Sequence[object], optimizer: torch.optim.Optimizer,
                        grad_clip: Optional[float] = None) -> Dict[str, float]:
        """One outer step on a meta-batch: mean meta-gradient over tasks, optional clipping
        of its global norm to ``grad_clip``, ``optimizer.step()``.

        Returns python floats: ``meta_loss`` (mean query loss after adaptation), ``accuracy``
        (mean query accuracy after adaptation), ``support_loss`` (mean support loss before
        adaptation) and ``grad_norm`` (meta-gradient norm before clipping). One host
        synchronisation per call (plus one for label ranges if the labels are on the device).
        """
        if grad_clip is not None and (isinstance(grad_clip, bool) or not isinstance(grad_clip, (int, float))
                                      or not math.isfinite(grad_clip) or grad_clip <= 0):
            raise ValueError(f"grad_clip must be None or a finite number > 0, got {grad_clip!r}")
        reference = self._reference_parameter()
        batch = prepare_episodes(episodes, self.n_way, reference.device, reference.dtype)
        parameters = [p for _, p in self.model.named_parameters()]
        optimizer.zero_grad(set_to_none=True)
        for parameter in parameters:
            parameter.grad = None
        with module_mode(self.model, True):
            if self.task_batching == "vmap":
                query_losses, accuracies, support_losses = self._vmapped_backward(batch)
            else:
                query_losses, accuracies, support_losses = self._sequential_backward(batch)
        grads = [p.grad for p in parameters if p.grad is not None]
        if grad_clip is not None:
            grad_norm = nn.utils.clip_grad_norm_(parameters, grad_clip)
        elif grads:
            grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        else:
            grad_norm = reference.new_zeros(())
        tasks, steps = support_losses.shape
        summary = torch.cat([query_losses, accuracies, grad_norm.detach().reshape(1).to(query_losses.dtype),
                             support_losses.flatten()]).cpu().tolist()  # the meta-step's one sync
        query, accuracy = summary[:tasks], summary[tasks:2 * tasks]
        norm, support = summary[2 * tasks], summary[2 * tasks + 1:]
        support_rows = [support[task * steps:(task + 1) * steps] for task in range(tasks)]
        try:
            self._raise_if_nonfinite(support_rows, query, steps, during_meta_step=True)
            if not math.isfinite(norm):
                raise NonFiniteLossError("meta-gradient", norm, during_meta_step=True)
        except NonFiniteLossError:
            optimizer.zero_grad(set_to_none=True)
            for parameter in parameters:
                parameter.grad = None
            raise
        optimizer.step()
        return {
            "meta_loss": sum(query) / tasks,
            "accuracy": sum(accuracy) / tasks,
            "support_loss": sum(row[0] for row in support_rows) / tasks,
            "grad_norm": norm,
        }

    def _sequential_backward(self, batch: List[Episode]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Adapt, score and back-propagate one task at a time: one task graph alive at once."""
        query_losses, accuracies, support_losses = [], [], []
        for episode in batch:
            adapted, support = inner_loop(
                self.model, dict(self.model.named_parameters()), self.adapted_names,
                episode.support_images, episode.support_labels,
                inner_lr=self.inner_lr, steps=self.inner_steps, create_graph=not self.first_order,
            )
            query_loss, accuracy = score_query(self.model, adapted, episode.query_images, episode.query_labels)
            (query_loss / len(batch)).backward()
            query_losses.append(query_loss.detach())
            accuracies.append(accuracy)
            support_losses.append(support)
            # Drop this task's graph roots now, not when the next task reassigns the names:
            # otherwise two task graphs are alive while the next one is built.
            del adapted, query_loss
        return torch.stack(query_losses), torch.stack(accuracies), torch.stack(support_losses)

    def _vmapped_backward(self, batch: List[Episode]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        first = batch[0]
        for task, episode in enumerate(batch[1:], start=1):
            for field in ("support_images", "query_images"):
                if getattr(episode, field).shape != getattr(first, field).shape:
                    raise EpisodeError(
                        f"task_batching='vmap' needs episodes of equal shapes, but {field} is "
                        f"{tuple(getattr(episode, field).shape)} here and {tuple(getattr(first, field).shape)} "
                        f"in episode 0; use task_batching='sequential'", task)
        stacked = [torch.stack([getattr(episode, field) for episode in batch])
                   for field in ("support_images", "support_labels", "query_images", "query_labels")]
        query_losses, accuracies, support_losses = vmapped_meta_losses(
            self.model, dict(self.model.named_parameters()), self.adapted_names, *stacked,
            inner_lr=self.inner_lr, steps=self.inner_steps, first_order=self.first_order,
        )
        query_losses.mean().backward()
        return query_losses.detach(), accuracies, support_losses

    # ------------------------------------------------------------------ evaluation
    def evaluate_episode(self, episode: object) -> Tuple[float, float]:
        """Adapt ``inner_steps_eval`` steps (no second-order graph, no meta-gradient), then
        score the query set under ``torch.no_grad()``. Returns ``(query_loss, accuracy)``."""
        reference = self._reference_parameter()
        (episode,) = prepare_episodes([episode], self.n_way, reference.device, reference.dtype, in_meta_batch=False)
        with module_mode(self.model, False):
            params = {name: p.detach() for name, p in self.model.named_parameters()}
            adapted, support = inner_loop(
                self.model, params, self.adapted_names, episode.support_images, episode.support_labels,
                inner_lr=self.inner_lr, steps=self.inner_steps_eval, create_graph=False, track_meta_gradient=False,
            )
            with torch.no_grad():
                loss, accuracy = score_query(self.model, adapted, episode.query_images, episode.query_labels)
        summary = torch.cat([loss.reshape(1), accuracy.reshape(1), support]).cpu().tolist()
        self._raise_if_nonfinite([summary[2:]], summary[:1], self.inner_steps_eval,
                                 during_meta_step=False, in_meta_batch=False)
        return summary[0], summary[1]

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _raise_if_nonfinite(support_rows: Sequence[Sequence[float]], query_losses: Sequence[float], steps: int,
                            during_meta_step: bool, in_meta_batch: bool = True) -> None:
        """Name the first non-finite loss: by task, support steps before the query loss."""
        tasks = len(support_rows)
        for task, (row, query) in enumerate(zip(support_rows, query_losses)):
            where = dict(task=task if in_meta_batch else None, tasks=tasks if in_meta_batch else None,
                         steps=steps, during_meta_step=during_meta_step)
            for step, loss in enumerate(row, start=1):
                if not math.isfinite(loss):
                    raise NonFiniteLossError("support", loss, step=step, **where)
            if not math.isfinite(query):
                raise NonFiniteLossError("query", query, **where)
