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

Step sizes (:mod:`fewshot_acdc.meta.step_sizes`)
    ``inner_lr`` is one number or one per parameter role (``{"atoms": 1e-4, "head": 0.1,
    "default": 0.01}``): an ACDC atom's gradient sums over every channel pair of its layer and is
    orders of magnitude larger, relative to the atom, than the head's. ``learn_inner_lr`` makes
    them meta-parameters: ``lslr`` (one per tensor and step, MAML++) or ``meta-sgd`` (one per
    element); :meth:`meta_parameters` lists them with the model's, checkpoints save
    :attr:`step_sizes`. ``multi_step_anneal`` turns on MAML++'s multi-step loss (the query loss
    after every inner step, weights annealed to the last step over that many iterations).

Second order in bounded memory (``recompute_inner_steps=True``)
    Each inner step keeps no graph in the forward pass and is run again, with its second-order
    graph, when the meta-gradient reaches it in the backward pass (gradient checkpointing across
    inner steps, :mod:`fewshot_acdc.meta.recompute`): one step's graph is alive at a time instead
    of ``inner_steps`` of them, for one more forward and backward of the support set per step.
    The meta-gradient is the plain path's (tests compare them in float64; atom-drop draws the same
    masks in the recomputation). Second order with ``sequential`` task batching only: first order
    keeps no inner graph, so the option changes nothing there; vmap and per-step BatchNorm are
    refused. When to turn it on: README, docs/performance.md (measured there).

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
    the query set under ``torch.no_grad()``. :meth:`MAML.evaluate_episodes` does the same for a
    list of episodes, stacking up to ``batch_size`` equally shaped ones into one
    ``torch.func.vmap`` program (per-episode results equal to float tolerance); its default is
    sequential on a CPU, where stacking was measured slower, and a memory-bounded stack on a GPU
    (:mod:`fewshot_acdc.meta.batching`). Per-step BatchNorm evaluates with running statistics, a
    pure function, so it stacks too.

BatchNorm and ``train()``/``eval()``
    Two choices, recorded as :attr:`MAML.batchnorm` (and in every eval file). ``per-step``: the
    backbone's BatchNorm layers were replaced by MAML++'s
    :class:`~fewshot_acdc.nn.PerStepBatchNorm2d` (``use_per_step_batchnorm``): BN weights and
    running statistics per inner step, batch statistics in meta-training, running statistics in
    ``eval()``, so evaluation is not transductive. ``transductive`` (the default), below.
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
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .batchnorm import check_no_running_stats
from .batching import default_eval_batch
from .episodes import FIELDS, Episode, check_label_ranges, check_support_set, prepare_episodes
from .errors import EpisodeError, NonFiniteLossError
from ..nn import parameter_roles
from ..nn.norm import has_per_step_batchnorm, inner_step
from .functional import (Params, adapt_steps, inner_loop, score_query, vmapped_evaluation, vmapped_meta_losses,
                         weighted_query_loss)
from .scopes import adapted_parameter_names, check_scope
from ..vocabulary import DEFAULT_INNER_STEPS, DEFAULT_INNER_STEPS_EVAL, HEAD_INITS
from .step_sizes import LEARNED_STEP_SIZES, InnerStepSizes, check_role_learning_rates, multi_step_weights

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


def check_grad_clip(grad_clip: Optional[float]) -> None:
    if grad_clip is not None and (isinstance(grad_clip, bool) or not isinstance(grad_clip, (int, float))
                                  or not math.isfinite(grad_clip) or grad_clip <= 0):
        raise ValueError(f"grad_clip must be None or a finite number > 0, got {grad_clip!r}")


def _equal_shape_chunks(episodes: Sequence[Episode], size: int) -> Iterator[List[Episode]]:
    """Runs of consecutive episodes with equal image shapes, cut into pieces of at most ``size``
    (what can be stacked for ``torch.func.vmap``), in order."""
    chunk: List[Episode] = []
    for episode in episodes:
        if chunk and (len(chunk) == size or episode.support_images.shape != chunk[0].support_images.shape
                      or episode.query_images.shape != chunk[0].query_images.shape):
            yield chunk
            chunk = []
        chunk.append(episode)
    if chunk:
        yield chunk


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
        inner_lr: inner-loop SGD step size (> 0): one number for every parameter, or one per
            parameter role with an optional ``default`` (:mod:`fewshot_acdc.meta.step_sizes`).
        inner_steps: inner steps during meta-training (>= 1).
        inner_steps_eval: inner steps in :meth:`evaluate_episode` (>= 0; 0 scores the
            meta-learned initialization without adaptation).
        first_order: first-order MAML (inner gradients treated as constants).
        task_batching: ``sequential`` (one task graph alive at a time) or ``vmap``.
        n_way: classes per episode; default ``model.head.out_features``.
        learn_inner_lr: ``none`` (fixed step sizes), ``lslr`` (per tensor and step, MAML++) or
            ``meta-sgd`` (per element), meta-learned from the ``inner_lr`` values.
        multi_step_anneal: ``None`` (the query loss after the last step) or the number of
            iterations over which MAML++'s multi-step loss anneals to the last step.
        head_init: ``per-class`` (MAML: each class starts from its own learned head row) or
            ``shared`` (UNICORN-MAML, Ye & Chao 2022: every task starts every class from the mean
            of the head's rows, see :meth:`task_start`); ``shared`` needs a scope that adapts the head.
        recompute_inner_steps: second order in bounded memory: recompute each inner step in the
            backward pass instead of keeping its graph (module docstring); no effect in first order.
    """

    def __init__(self, model: nn.Module, scope: str = "all", inner_lr: Union[float, Mapping[str, float]] = 0.01,
                 inner_steps: int = DEFAULT_INNER_STEPS, inner_steps_eval: int = DEFAULT_INNER_STEPS_EVAL,
                 first_order: bool = False,
                 task_batching: str = "sequential", n_way: Optional[int] = None, learn_inner_lr: str = "none",
                 multi_step_anneal: Optional[int] = None, head_init: str = "per-class",
                 recompute_inner_steps: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_scope(scope)
        check_role_learning_rates(inner_lr)
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
        if learn_inner_lr not in LEARNED_STEP_SIZES:
            raise ValueError(f"learn_inner_lr must be one of {', '.join(LEARNED_STEP_SIZES)}, got {learn_inner_lr!r}")
        if multi_step_anneal is not None and (not _is_integer(multi_step_anneal) or multi_step_anneal < 1):
            raise ValueError(f"multi_step_anneal must be None or an integer >= 1, got {multi_step_anneal!r}")
        if head_init not in HEAD_INITS:
            raise ValueError(f"head_init must be one of {', '.join(HEAD_INITS)}, got {head_init!r}")
        if not isinstance(recompute_inner_steps, bool):
            raise ValueError(f"recompute_inner_steps must be True or False, got {recompute_inner_steps!r}")
        if recompute_inner_steps and task_batching == "vmap":
            raise ValueError("recompute_inner_steps runs each inner step as a custom autograd function, which "
                             "torch.func.vmap cannot batch; use task_batching='sequential'")
        check_no_running_stats(model)
        self.batchnorm = "per-step" if has_per_step_batchnorm(model) else "transductive"
        if self.batchnorm == "per-step" and task_batching == "vmap":
            raise ValueError("per-step BatchNorm updates its running statistics in place, which torch.func.vmap "
                             "cannot batch; use task_batching='sequential'")
        if self.batchnorm == "per-step" and recompute_inner_steps:
            raise ValueError("per-step BatchNorm updates its running statistics in every training forward, which "
                             "recompute_inner_steps would run twice per inner step; use the plain second-order path")
        self.model = model
        self.scope = scope
        self.inner_steps = inner_steps
        self.inner_steps_eval = inner_steps_eval
        self.first_order = first_order
        self.task_batching = task_batching
        self.recompute_inner_steps = recompute_inner_steps
        self.multi_step_anneal = multi_step_anneal
        self.n_way = n_way if n_way is not None else _infer_n_way(model)
        self.adapted_names: List[str] = adapted_parameter_names(model, scope)
        named = dict(model.named_parameters())
        roles = parameter_roles(model)
        self.adapted_roles: List[str] = [roles[name] for name in self.adapted_names]
        self._roles = roles
        self.step_sizes = InnerStepSizes({name: named[name] for name in self.adapted_names}, roles, inner_lr,
                                         learn=learn_inner_lr, steps=inner_steps)
        self.adapted_parameter_count: int = sum(named[name].numel() for name in self.adapted_names)
        self.head_init = head_init
        self._shared_head_names: List[str] = []
        if head_init == "shared":
            self._shared_head_names = [name for name in self.adapted_names if roles[name] == "head"]
            if not self._shared_head_names:
                raise ValueError(f"head_init='shared' starts every class from the same head row, which only the "
                                 f"inner loop can tell apart, but scope {scope!r} does not adapt the head")
            with torch.no_grad():  # the stored head says what a task starts from: every row the shared one
                for name in self._shared_head_names:
                    named[name].copy_(named[name].mean(0, keepdim=True).expand_as(named[name]))

    @property
    def inner_lr(self) -> Union[float, Dict[str, float]]:
        """The configured step sizes: one number, or ``{role: value}`` (initial values when learned)."""
        rates = self.step_sizes.role_rates
        return rates["default"] if set(rates) == {"default"} else dict(rates)

    def __repr__(self) -> str:
        learned = f", learn_inner_lr={self.step_sizes.learn!r}" if self.step_sizes.learn != "none" else ""
        return (f"MAML({type(self.model).__name__}, scope={self.scope!r}, inner_lr={self.inner_lr}{learned}, "
                f"inner_steps={self.inner_steps}, inner_steps_eval={self.inner_steps_eval}, "
                f"first_order={self.first_order}, task_batching={self.task_batching!r}, "
                f"{'recompute_inner_steps=True, ' if self.recompute_inner_steps else ''}"
                f"adapted {self.adapted_parameter_count:,} parameters in {len(self.adapted_names)} tensors)")

    # ------------------------------------------------------------------ helpers
    def _reference_parameter(self) -> torch.Tensor:
        return next(self.model.parameters())

    def parameters(self) -> Dict[str, torch.Tensor]:
        """The model's parameters as a dict (tied tensors once), the input :meth:`adapt` expects."""
        return dict(self.model.named_parameters())

    def meta_parameters(self) -> List[torch.Tensor]:
        """Everything the outer loop optimises: the model's parameters and learned step sizes."""
        return list(self.model.parameters()) + list(self.step_sizes.parameters())

    def state_dict(self) -> Dict[str, Dict[str, torch.Tensor]]:
        """The model's and the step sizes' state (what a checkpoint must hold to evaluate)."""
        return {"model": self.model.state_dict(), "step_sizes": self.step_sizes.state_dict()}

    def load_state_dict(self, state: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        self.model.load_state_dict(state["model"])
        self.step_sizes.load_state_dict(state.get("step_sizes", {}))

    def task_start(self, params: Params) -> Params:
        """The parameters a task's inner loop starts from. With ``head_init='shared'`` every class's
        head row (and bias) is the mean of the rows: the meta-gradient reaches each row as the mean
        over classes, so the rows stay one learned vector, and no label is favoured before the
        support set is seen. Otherwise ``params`` itself."""
        if not self._shared_head_names:
            return params
        start = dict(params)
        for name in self._shared_head_names:
            rows = params[name]
            start[name] = rows.mean(0, keepdim=True).expand_as(rows).contiguous()
        return start

    # ------------------------------------------------------------------ pure inner loop
    def adapt(self, params: Params, support_images: torch.Tensor, support_labels: torch.Tensor, *,
              steps: Optional[int] = None, create_graph: Optional[bool] = None,
              check_finite: bool = True) -> Params:
        """Adapt ``params`` (name -> tensor, e.g. :meth:`parameters`) on one support set.

        Returns a new dict: adapted tensors for the scope's names, the same tensor objects for
        the rest (the loop starts from :meth:`task_start` of ``params``). ``steps`` defaults to ``inner_steps``; ``create_graph`` to second order unless
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
        adapted, support_losses = inner_loop(self.model, self.task_start(params), self.adapted_names, images, labels,
                                             inner_lr=self.step_sizes.values(), steps=steps,
                                             create_graph=create_graph, recompute=self.recompute_inner_steps)
        if check_finite:
            losses = support_losses.cpu().tolist()  # the one synchronisation, after the loop
            self._raise_if_nonfinite([losses], [0.0], steps, during_meta_step=False, in_meta_batch=False)
        return adapted

    # ------------------------------------------------------------------ meta-training
    def step_weights(self, iteration: int) -> Optional[Tuple[float, ...]]:
        """Multi-step loss weights at ``iteration`` (``None`` when the multi-step loss is off)."""
        if self.multi_step_anneal is None:
            return None
        return multi_step_weights(self.inner_steps, iteration, self.multi_step_anneal)

    def meta_gradient(self, episodes: Sequence[object], iteration: int = 0) -> Dict[str, object]:
        """The mean meta-gradient over the meta-batch, left in the ``.grad`` of every tensor of
        :meth:`meta_parameters` (previous gradients are replaced, not accumulated).

        The optimizer, clipping and any all-reduce between this and the outer step are the
        caller's (:mod:`fewshot_acdc.runs.training`). ``iteration`` only sets the multi-step
        loss weights. Returns python values, read in one host synchronisation:

        * ``meta_loss`` (mean query loss after adaptation; the multi-step loss when on),
          ``accuracy`` (mean query accuracy after adaptation);
        * ``support_loss`` (mean support loss before adaptation), ``support_loss_by_step``
          (mean support loss before each update) and ``support_loss_after`` (after the last
          update, one forward without graph): how, and whether, the inner loop descends;
        * ``grad_norm`` (meta-gradient norm), ``grad_norm_by_role`` (per parameter role, and
          ``step_sizes`` for learned ones), ``inner_grad_norm_by_role`` (per role, the inner
          gradient's norm at each step, mean over tasks).

        Raises :class:`NonFiniteLossError` (gradients cleared) when a loss or the meta-gradient
        is NaN/Inf.
        """
        reference = self._reference_parameter()
        batch = prepare_episodes(episodes, self.n_way, reference.device, reference.dtype)
        parameters = self.meta_parameters()
        for parameter in parameters:
            parameter.grad = None
        weights = self.step_weights(iteration)
        with module_mode(self.model, True):
            if self.task_batching == "vmap":
                query_losses, accuracies, support_losses, inner_norms = self._vmapped_backward(batch, weights)
            else:
                query_losses, accuracies, support_losses, inner_norms = self._sequential_backward(batch, weights)
        role_names, role_norms = self._meta_gradient_norms_by_role(reference)
        inner_roles = sorted(set(self.adapted_roles))
        inner_by_role = self._inner_norms_by_role(inner_norms, inner_roles)  # [roles, steps]
        tasks, columns = support_losses.shape  # the loss before each update, then after the last
        steps = columns - 1
        summary = torch.cat([query_losses, accuracies, role_norms.to(query_losses.dtype),
                             support_losses.flatten(), inner_by_role.flatten().to(query_losses.dtype)]
                            ).cpu().tolist()  # the meta-step's one sync
        query, accuracy = summary[:tasks], summary[tasks:2 * tasks]
        offset = 2 * tasks
        by_role = dict(zip(role_names, summary[offset:offset + len(role_names)]))
        offset += len(role_names)
        support = summary[offset:offset + tasks * columns]
        inner = summary[offset + tasks * columns:]
        support_rows = [support[task * columns:task * columns + steps] for task in range(tasks)]
        final_support = [support[task * columns + steps] for task in range(tasks)]
        norm = math.sqrt(sum(value * value for value in by_role.values()))
        try:
            self._raise_if_nonfinite(support_rows, query, steps, during_meta_step=True)
            if not math.isfinite(norm):
                raise NonFiniteLossError("meta-gradient", norm, during_meta_step=True)
        except NonFiniteLossError:
            for parameter in parameters:
                parameter.grad = None
            raise
        return {
            "meta_loss": sum(query) / tasks,
            "accuracy": sum(accuracy) / tasks,
            "support_loss": sum(row[0] for row in support_rows) / tasks,
            "support_loss_by_step": [sum(row[step] for row in support_rows) / tasks for step in range(steps)],
            "support_loss_after": sum(final_support) / tasks,
            "grad_norm": norm,
            "grad_norm_by_role": by_role,
            "inner_grad_norm_by_role": {role: inner[index * steps:(index + 1) * steps]
                                        for index, role in enumerate(inner_roles)},
        }

    def meta_train_step(self, episodes: Sequence[object], optimizer: torch.optim.Optimizer,
                        grad_clip: Optional[float] = None, iteration: int = 0) -> Dict[str, object]:
        """:meth:`meta_gradient`, clipping of its global norm to ``grad_clip``, ``optimizer.step()``:
        one outer step for callers that need no all-reduce or schedule (the trainer composes the
        same pieces itself). The optimizer must hold :meth:`meta_parameters`."""
        check_grad_clip(grad_clip)
        optimizer.zero_grad(set_to_none=True)
        stats = self.meta_gradient(episodes, iteration)
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(self.meta_parameters(), grad_clip)
        optimizer.step()
        return stats

    def meta_gradient_norms(self) -> Tuple[Dict[str, float], float]:
        """``(grad_norm_by_role, grad_norm)`` of the gradients now in ``.grad``, as
        :meth:`meta_gradient` reports them (one host synchronisation). For a caller that changes
        the gradients after :meth:`meta_gradient`, e.g. a data-parallel trainer whose all-reduce
        turns each process's share of the meta-gradient into the whole one."""
        names, norms = self._meta_gradient_norms_by_role(self._reference_parameter())
        by_role = dict(zip(names, norms.cpu().tolist()))
        return by_role, math.sqrt(sum(value * value for value in by_role.values()))

    def _meta_gradient_norms_by_role(self, reference: torch.Tensor) -> Tuple[List[str], torch.Tensor]:
        """Per-role norms of the meta-gradient, on the device (no sync)."""
        squares: Dict[str, List[torch.Tensor]] = {}
        for name, parameter in self.model.named_parameters():
            if parameter.grad is not None:
                squares.setdefault(self._roles[name], []).append(parameter.grad.detach().pow(2).sum())
        for parameter in self.step_sizes.parameters():
            if parameter.grad is not None:
                squares.setdefault("step_sizes", []).append(parameter.grad.detach().pow(2).sum())
        names = sorted(squares)
        if not names:
            return [], reference.new_zeros(0)
        return names, torch.stack([torch.stack(squares[role]).sum().sqrt() for role in names])

    def _inner_norms_by_role(self, norms: torch.Tensor, roles: Sequence[str]) -> torch.Tensor:
        """``[tasks, steps, tensors]`` per-tensor inner gradient norms -> ``[roles, steps]`` per-role
        norms, mean over tasks."""
        key = (tuple(roles), norms.dtype, norms.device)
        cache = self.__dict__.setdefault("_role_membership", {})
        if key not in cache:  # built once: a host-to-device copy per meta-step would be a sync point on a GPU
            cache[key] = torch.tensor([[float(role == wanted) for wanted in roles] for role in self.adapted_roles],
                                      dtype=norms.dtype, device=norms.device)
        membership = cache[key]
        return (norms.pow(2) @ membership).sqrt().mean(0).transpose(0, 1)

    def _sequential_backward(self, batch: List[Episode], weights: Optional[Tuple[float, ...]]):
        """Adapt, score and back-propagate one task at a time: one task graph alive at once."""
        query_losses, accuracies, support_losses, gradient_norms = [], [], [], []
        for episode in batch:
            result = adapt_steps(
                self.model, self.task_start(dict(self.model.named_parameters())), self.adapted_names,
                episode.support_images, episode.support_labels,
                # step sizes built per task: each task's backward frees the graph that makes them
                inner_lr=self.step_sizes.values(), steps=self.inner_steps, create_graph=not self.first_order,
                keep_trajectory=weights is not None, score_final_support=True,
                recompute=self.recompute_inner_steps,
            )
            query_loss, accuracy = weighted_query_loss(self.model, result, episode.query_images,
                                                       episode.query_labels, weights)
            (query_loss / len(batch)).backward()
            query_losses.append(query_loss.detach())
            accuracies.append(accuracy)
            support_losses.append(torch.cat([result.support_losses, result.final_support_loss.reshape(1)]))
            gradient_norms.append(result.gradient_norms)
            # Drop this task's graph roots now, not when the next task reassigns the names:
            # otherwise two task graphs are alive while the next one is built.
            del result, query_loss
        return (torch.stack(query_losses), torch.stack(accuracies), torch.stack(support_losses),
                torch.stack(gradient_norms))

    def _vmapped_backward(self, batch: List[Episode], weights: Optional[Tuple[float, ...]]):
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
        query_losses, accuracies, support_losses, gradient_norms = vmapped_meta_losses(
            self.model, self.task_start(dict(self.model.named_parameters())), self.adapted_names, *stacked,
            inner_lr=self.step_sizes.values(), steps=self.inner_steps, first_order=self.first_order,
            step_weights=weights,
        )
        query_losses.mean().backward()
        return query_losses.detach(), accuracies, support_losses, gradient_norms

    # ------------------------------------------------------------------ evaluation
    def evaluate_episode(self, episode: object, steps: Optional[int] = None) -> Tuple[float, float]:
        """Adapt ``steps`` (default ``inner_steps_eval``) steps (no second-order graph, no
        meta-gradient), then score the query set under ``torch.no_grad()``. Returns
        ``(query_loss, accuracy)``."""
        steps = self.inner_steps_eval if steps is None else steps
        reference = self._reference_parameter()
        (episode,) = prepare_episodes([episode], self.n_way, reference.device, reference.dtype, in_meta_batch=False)
        with module_mode(self.model, False):
            params = self.task_start({name: p.detach() for name, p in self.model.named_parameters()})
            adapted, support = inner_loop(
                self.model, params, self.adapted_names, episode.support_images, episode.support_labels,
                inner_lr=self.step_sizes.values(detach=True), steps=steps, create_graph=False,
                track_meta_gradient=False,
            )
            with torch.no_grad(), inner_step(max(steps - 1, 0)):
                loss, accuracy = score_query(self.model, adapted, episode.query_images, episode.query_labels)
        summary = torch.cat([loss.reshape(1), accuracy.reshape(1), support]).cpu().tolist()
        self._raise_if_nonfinite([summary[2:]], summary[:1], steps,
                                 during_meta_step=False, in_meta_batch=False)
        return summary[0], summary[1]

    def evaluate_episodes(self, episodes: Sequence[object], steps: Optional[int] = None,
                          batch_size: Optional[int] = None) -> List[Tuple[float, float]]:
        """:meth:`evaluate_episode` for each of ``episodes``, adapting up to ``batch_size`` of them
        together: ``(query_loss, accuracy)`` per episode, in order.

        Consecutive episodes of equal shapes are stacked and adapted as one ``torch.func.vmap``
        program (:func:`~fewshot_acdc.meta.functional.vmapped_evaluation`): the same steps from the
        same parameters, so the results equal :meth:`evaluate_episode`'s to float tolerance (the
        batched kernels sum in another order). ``batch_size`` 1 is :meth:`evaluate_episode` itself;
        ``None`` picks the default (:func:`~fewshot_acdc.meta.batching.default_eval_batch`: 1 on a
        CPU, where stacking was measured slower; a memory-bounded stack on a GPU). One host synchronisation per stack; a non-finite loss raises as :meth:`evaluate_episode`
        would for the first such episode.
        """
        if batch_size is not None and (not _is_integer(batch_size) or batch_size < 1):
            raise ValueError(f"batch_size must be None or an integer >= 1, got {batch_size!r}")
        steps = self.inner_steps_eval if steps is None else steps
        if not _is_integer(steps) or steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        episodes = list(episodes)
        if not episodes:
            return []
        reference = self._reference_parameter()
        batch = prepare_episodes(episodes, self.n_way, reference.device, reference.dtype, in_meta_batch=False)
        size = batch_size if batch_size is not None else self.evaluation_batch_size(batch[0])
        if size == 1:
            return [self.evaluate_episode(episode, steps) for episode in batch]
        results: List[Tuple[float, float]] = []
        with module_mode(self.model, False):
            params = self.task_start({name: p.detach() for name, p in self.model.named_parameters()})
            for chunk in _equal_shape_chunks(batch, size):
                stacked = [torch.stack([getattr(episode, field) for episode in chunk]) for field in FIELDS]
                losses, accuracies, support = vmapped_evaluation(
                    self.model, params, self.adapted_names, *stacked,
                    inner_lr=self.step_sizes.values(detach=True), steps=steps)
                summary = torch.cat([losses, accuracies, support.flatten()]).cpu().tolist()  # the stack's one sync
                count = len(chunk)
                rows = [summary[2 * count + index * steps:2 * count + (index + 1) * steps] for index in range(count)]
                for index in range(count):
                    self._raise_if_nonfinite([rows[index]], [summary[index]], steps,
                                             during_meta_step=False, in_meta_batch=False)
                results += list(zip(summary[:count], summary[count:2 * count]))
        return results

    def evaluation_batch_size(self, episode: Episode) -> int:
        """The default number of episodes shaped like ``episode`` that :meth:`evaluate_episodes`
        adapts together (:func:`~fewshot_acdc.meta.batching.default_eval_batch`; once per shape
        and device)."""
        reference = self._reference_parameter()
        key = (tuple(episode.support_images.shape), tuple(episode.query_images.shape), reference.dtype,
               reference.device)
        cache = self.__dict__.setdefault("_evaluation_batch_sizes", {})
        if key not in cache:
            with module_mode(self.model, False):  # no atom drop: the estimate draws no random numbers
                cache[key] = default_eval_batch(self.model, episode)
        return cache[key]

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
