"""One slice per distinct shape of a shared coefficient tensor, and one gradient for all of them.

Layers of an ACDC-net or ACDC-block use the *leading slice* of their scope's coefficient tensor
(``A[:O, :s]``). If every layer sliced the full tensor itself, the backward of each slice would
write a zero-filled gradient of the *full* tensor, and autograd would add one such tensor per
layer: 16 full-size tensors per backward for a ResNet18 ACDC-net, in every inner step of MAML
and again in the second-order graph.

:func:`nested_coefficient_slices` makes, once per forward, one view per distinct slice shape
(:func:`leading_slices`); layers with the same shape share a view, so their gradients add at that
size. All views come out of one autograd node, :class:`_LeadingSlices`, whose backward receives
the gradient of every shape at once and writes them into *one* full-size tensor (a copy of the
largest, then an in-place add per smaller shape): no zero-filled padding per shape, no full-size
additions. That backward is itself a function with a cheap derivative (slicing the incoming
gradient, :class:`_SumOfPaddedSlices`), so second- and higher-order gradients (MAML) take the same
route. Under torch.func transforms, where custom functions have no batching rule, the views are
cut from each other instead (:func:`nested_leading_slices`: 512x512 -> 512x256 -> 256x256 ...,
each gradient padded only to the next larger view).

A slice narrower than the full tensor is not contiguous. The factored path does not mind (its
``(O, s*m)`` coefficient matrix is a strided view of it), but composing a kernel needs an
``(O*s, m)`` matrix, a copy: :class:`SharedSlice` makes that copy at most once per shape and
forward, when a layer on the kernel path first asks for it, and the other layers of that shape
reuse it. Copying every slice up front would keep copies nobody needs in a second-order graph
(deep layers on a support set take the factored path); copying per layer would keep one per
layer. The function computed is the same (the tests compare gradients to second order with the
layers slicing on their own).

It finds the tensors through the modules it is given, so it works with whatever tensors the
modules hold at call time: parameters, ``torch.func.functional_call`` substitutes, learn2learn
clones and higher's fast weights alike.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import torch
from torch import nn

from .acdc import ACDCConv2d
from .ops._torch_private import functorch_transforms_active

Shape2 = Tuple[int, int]


def _check_slices_fit(shared: torch.Tensor, shapes: Iterable[Shape2]) -> None:
    for rows, cols in shapes:
        if rows > shared.shape[0] or cols > shared.shape[1]:
            raise ValueError(f"slice {(rows, cols)} does not fit a shared tensor of shape {tuple(shared.shape)}")


def nested_leading_slices(shared: torch.Tensor, shapes: Iterable[Shape2]) -> Dict[Shape2, torch.Tensor]:
    """``shared[:O, :s]`` for every ``(O, s)`` in ``shapes`` (views), each taken from the
    smallest already-made one that contains it (the full tensor for the largest)."""
    shapes = list(shapes)
    _check_slices_fit(shared, shapes)
    full: Shape2 = (shared.shape[0], shared.shape[1])
    views: Dict[Shape2, torch.Tensor] = {full: shared}
    for shape in sorted(set(shapes), key=lambda rows_cols: (-rows_cols[0] * rows_cols[1], rows_cols)):
        if shape in views:
            continue
        parent_shape = min((made for made in views if made[0] >= shape[0] and made[1] >= shape[1]),
                           key=lambda made: made[0] * made[1])
        views[shape] = views[parent_shape][:shape[0], :shape[1]]
    return views


def leading_slices(shared: torch.Tensor, shapes: Iterable[Shape2]) -> Dict[Shape2, torch.Tensor]:
    """``shared[:O, :s]`` for every distinct ``(O, s)`` in ``shapes`` (views), differentiated as
    one node whose backward builds a single full-size gradient (see the module docstring)."""
    distinct = tuple(sorted(set(shapes), key=lambda rows_cols: (-rows_cols[0] * rows_cols[1], rows_cols)))
    _check_slices_fit(shared, distinct)
    if functorch_transforms_active() or not (torch.is_grad_enabled() and shared.requires_grad):
        return nested_leading_slices(shared, distinct)
    return dict(zip(distinct, _LeadingSlices.apply(shared, distinct)))


class _LeadingSlices(torch.autograd.Function):
    """``shared -> (shared[:O1, :s1], shared[:O2, :s2], ...)``, largest shape first."""

    @staticmethod
    def forward(ctx, shared, shapes):
        ctx.full_shape = tuple(shared.shape)
        ctx.shapes = shapes
        ctx.set_materialize_grads(False)  # a shape no layer used gets None, not a zero tensor
        return tuple(shared[:rows, :cols] for rows, cols in shapes)

    @staticmethod
    def backward(ctx, *grads):
        used = [(shape, grad) for shape, grad in zip(ctx.shapes, grads) if grad is not None]
        if not used:
            return None, None
        shapes = tuple(shape for shape, _ in used)
        return _SumOfPaddedSlices.apply(ctx.full_shape, shapes, *(grad for _, grad in used)), None


class _SumOfPaddedSlices(torch.autograd.Function):
    """``(grad1, grad2, ...) -> one full-size tensor with each gradient added into its leading
    slice``: the backward of :class:`_LeadingSlices`, and slicing is its own backward."""

    @staticmethod
    def forward(ctx, full_shape, shapes, *grads):
        ctx.shapes = shapes
        first_shape, first = shapes[0], grads[0]
        if first_shape == tuple(full_shape[:2]):
            full = first.clone(memory_format=torch.contiguous_format)
            shapes, grads = shapes[1:], grads[1:]
        else:
            full = first.new_zeros(full_shape)
        for (rows, cols), grad in zip(shapes, grads):
            full[:rows, :cols] += grad
        return full

    @staticmethod
    def backward(ctx, grad_full):
        return (None, None) + tuple(_LeadingSlices.apply(grad_full, ctx.shapes))


class SharedSlice:
    """The ``(O, s, m)`` slice that every layer of one shape uses during one forward: a strided
    view, and its contiguous copy made on first request (see the module docstring)."""

    def __init__(self, view: torch.Tensor) -> None:
        self.view = view
        self._contiguous: Optional[torch.Tensor] = None

    def contiguous(self) -> torch.Tensor:
        if self._contiguous is None:
            self._contiguous = self.view.contiguous()
        return self._contiguous


@contextmanager
def nested_coefficient_slices(model: nn.Module) -> Iterator[None]:
    """Within the block, every shared-coefficient :class:`ACDCConv2d` of ``model`` uses a nested
    view of its shared tensor (see the module docstring); restored on exit, also on error."""
    users: Dict[int, Tuple[torch.Tensor, List[ACDCConv2d]]] = {}
    for module in model.modules():
        if isinstance(module, ACDCConv2d) and module.shares_coefficients and module.coefficients is not None:
            users.setdefault(id(module.coefficients), (module.coefficients, []))[1].append(module)
    try:
        for shared, layers in users.values():
            if len(layers) < 2:
                continue
            views = leading_slices(shared, [layer.coefficient_shape[:2] for layer in layers])
            slices = {shape: SharedSlice(view) for shape, view in views.items() if view is not shared}
            for layer in layers:
                layer.use_coefficient_view(slices.get(layer.coefficient_shape[:2]))
        yield
    finally:
        for _, layers in users.values():
            for layer in layers:
                layer.use_coefficient_view(None)
