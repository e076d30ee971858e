"""Second-order inner steps that keep no graph: recomputed in the backward pass (bounded memory).

Why. Second-order MAML differentiates through every inner step, so the plain inner loop keeps
each step's forward activations *and* the graph of its inner gradient (the tensors the double
backward reads) until the meta-gradient has passed through them: memory grows with the inner
steps times the activations of the support set, which at 224 px is most of a GPU (Chen et al. fell
back to first order for their ResNets for this reason; learn2learn issue #393 reports the same).

What. :func:`recomputed_inner_step` runs one inner SGD step ``theta' = theta - lr * grad
L_support(theta)`` as a custom ``autograd.Function`` (gradient checkpointing across inner steps):

* forward: the support loss and its gradient *without* a graph (first-order cost), returning the
  updated tensors; it keeps only its inputs (the parameters and step sizes the step read, which
  the plain path keeps too) and the random number generators' states;
* backward: runs the same step again with ``create_graph=True`` from the saved inputs, with the
  random number generators set back to their states at the forward (atom-drop draws the same
  masks), differentiates the updated tensors with the incoming gradient (the Hessian-vector
  products of second-order MAML) and frees that step's graph before the previous step's backward
  rebuilds its own.

So at any time one inner step's second-order graph is alive instead of all of them, for one more
forward and backward per inner step. The function computed is the plain path's, op for op
(tests/meta/test_recompute.py compares the meta-gradients in float64 for standard and ACDC
networks, scopes ``all`` and ``atoms``, 1 and 3 steps, with atom-drop and learned step sizes).

Why not ``torch.utils.checkpoint`` around each step: its non-reentrant form allows a gradient
inside the checkpointed region and gives the same meta-gradient (tried, bit for bit), but the
inner gradient of its *first* pass unpacks the activations the region has just discarded, so it
recomputes the step's forward already in the forward pass: its inner loop took twice the plain
one's time in a trial (ResNet18 ACDC-net, 84 px, 5 steps), where this function's first pass, which
needs no graph at all, costs what the plain one does. (A region that is handed a dict the caller
mutates afterwards, as the inner loop does with its parameter dict, recomputes from the mutated
values and gets a wrong meta-gradient without a warning; the inputs here are copied into a tuple.)

Limits (checked by the callers): per-step BatchNorm updates its running statistics in every
training forward, which the recomputation would do twice; a ``torch.func`` transform (vmap) cannot
run a custom function's backward.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import get_device_states, set_device_states

Params = Dict[str, torch.Tensor]
# (params, step sizes by adapted name for this step, create_graph) ->
#     (the updated tensors by adapted name, support loss, per-tensor gradient norms)
StepFunction = Callable[[Params, Dict[str, object], bool], Tuple[Params, torch.Tensor, torch.Tensor]]


class RandomState:
    """The states of every random number generator a forward of ``model`` may draw from: torch's
    CPU generator, the default generator of each accelerator the ``tensors`` live on, and the
    modules' own generators (``ACDCConv2d(generator=...)``). :meth:`replay` runs a block from
    these states and leaves every generator as it was before the block."""

    def __init__(self, model: nn.Module, tensors: Sequence[torch.Tensor]) -> None:
        self.cpu = torch.get_rng_state()
        one_per_device = {tensor.device: tensor for tensor in tensors}.values()  # a state per device, not per tensor
        self.device_ids, self.device_states = get_device_states(*one_per_device)
        self.device_type = next((tensor.device.type for tensor in tensors
                                 if tensor.device.type not in ("cpu", "meta")), None)
        self.module_generators: List[Tuple[torch.Generator, torch.Tensor]] = [
            (generator, generator.get_state()) for generator in _module_generators(model)]

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        now = [(generator, generator.get_state()) for generator, _ in self.module_generators]
        fork = (torch.random.fork_rng(devices=self.device_ids, device_type=self.device_type)
                if self.device_type is not None else torch.random.fork_rng(devices=[]))
        with fork:
            torch.set_rng_state(self.cpu)
            if self.device_type is not None:
                set_device_states(self.device_ids, self.device_states, device_type=self.device_type)
            for generator, state in self.module_generators:
                generator.set_state(state)
            try:
                yield
            finally:
                for generator, state in now:
                    generator.set_state(state)


def _module_generators(model: nn.Module) -> List[torch.Generator]:
    seen, generators = set(), []
    for module in model.modules():
        generator = getattr(module, "generator", None)
        if isinstance(generator, torch.Generator) and id(generator) not in seen:
            seen.add(id(generator))
            generators.append(generator)
    return generators


class _Plan:
    """What one recomputed step needs besides its tensor inputs (a custom function's inputs must
    be flat): the step, which inputs are the parameters, which are step sizes."""

    def __init__(self, step: StepFunction, model: nn.Module, names: List[str], adapted_names: Sequence[str],
                 step_sizes: Dict[str, object], tensor_step_sizes: List[str]) -> None:
        self.step = step
        self.model = model
        self.names = names                        # inputs[:len(names)]: params, in this order
        self.adapted_names = list(adapted_names)
        self.step_sizes = step_sizes              # name -> float, or None where a tensor input holds it
        self.tensor_step_sizes = tensor_step_sizes  # inputs[len(names):]: step sizes of these names
        self.updated_names: List[str] = []        # set by the forward: the adapted names it changed
        self.random_state: Optional[RandomState] = None

    def run(self, inputs: Sequence[torch.Tensor], create_graph: bool) -> Tuple[Params, torch.Tensor, torch.Tensor]:
        params = dict(zip(self.names, inputs[:len(self.names)]))
        sizes = dict(self.step_sizes)
        sizes.update(zip(self.tensor_step_sizes, inputs[len(self.names):]))
        return self.step(params, sizes, create_graph)


class _RecomputedStep(torch.autograd.Function):
    """``(plan, *params, *step sizes) -> (*updated tensors, support loss, gradient norms)``."""

    @staticmethod
    def forward(ctx, plan: _Plan, *inputs: torch.Tensor):
        plan.random_state = RandomState(plan.model, inputs)
        adapted = set(plan.adapted_names)
        with torch.enable_grad():
            # Detached leaves: the first pass needs the inner gradient's value only, no graph to keep.
            leaves = [tensor.detach().requires_grad_(name in adapted)
                      for name, tensor in zip(plan.names, inputs[:len(plan.names)])]
            leaves += [tensor.detach() for tensor in inputs[len(plan.names):]]
            updated, loss, norms = plan.run(leaves, create_graph=False)
        plan.updated_names = list(updated)  # a tensor the support loss does not reach stays as it is
        ctx.plan = plan
        ctx.save_for_backward(*inputs)
        outputs = tuple(updated[name].detach() for name in plan.updated_names)
        loss, norms = loss.detach(), norms.detach()
        ctx.mark_non_differentiable(loss, norms)
        return (*outputs, loss, norms)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grad_outputs: Optional[torch.Tensor]):
        plan: _Plan = ctx.plan
        inputs = ctx.saved_tensors
        needs = ctx.needs_input_grad[1:]
        adapted = set(plan.adapted_names)
        with plan.random_state.replay(), torch.enable_grad():
            leaves = [tensor.detach().requires_grad_(needed or name in adapted)
                      for name, tensor, needed in zip(plan.names, inputs, needs)]
            leaves += [tensor.detach().requires_grad_(needed)
                       for tensor, needed in zip(inputs[len(plan.names):], needs[len(plan.names):])]
            updated, _, _ = plan.run(leaves, create_graph=True)
            outputs, gradients = [], []
            for name, gradient in zip(plan.updated_names, grad_outputs):
                if gradient is not None:
                    outputs.append(updated[name])
                    gradients.append(gradient)
            wanted = [index for index, needed in enumerate(needs) if needed]
            results: List[Optional[torch.Tensor]] = [None] * len(inputs)
            if outputs and wanted:
                found = torch.autograd.grad(outputs, [leaves[index] for index in wanted], gradients,
                                            allow_unused=True)
                for index, gradient in zip(wanted, found):
                    results[index] = gradient
        return (None, *results)


def recomputed_inner_step(step: StepFunction, model: nn.Module, params: Params, adapted_names: Sequence[str],
                          step_sizes: Dict[str, object]) -> Tuple[Params, torch.Tensor, torch.Tensor]:
    """One second-order inner step whose graph is rebuilt in the backward pass (module docstring).

    ``step(params, step_sizes, create_graph)`` is the step itself (a pure function of its
    arguments, the images closed over); ``params`` every tensor the model needs, ``step_sizes``
    adapted name -> this step's size (a float or a tensor; tensors that require grad are
    meta-learned and receive their meta-gradient). Returns what ``step`` returns:
    ``(updated tensors by name, support loss, gradient norms)``, the loss and norms detached.
    """
    names = list(params)
    tensor_step_sizes = [name for name in adapted_names if isinstance(step_sizes[name], torch.Tensor)]
    plan = _Plan(step, model, names, adapted_names,
                 {name: (None if name in tensor_step_sizes else step_sizes[name]) for name in adapted_names},
                 tensor_step_sizes)
    inputs = [params[name] for name in names] + [step_sizes[name] for name in tensor_step_sizes]
    *outputs, loss, norms = _RecomputedStep.apply(plan, *inputs)
    return dict(zip(plan.updated_names, outputs)), loss, norms
