"""When the custom ``autograd.Function`` s of :mod:`.kernel` and :mod:`.factored` may run, and
which gradients their backward has to compute."""
from __future__ import annotations

from typing import Tuple

import torch

from ._torch_private import engine_will_execute, functorch_transforms_active


def custom_autograd_applies(features: torch.Tensor) -> bool:
    """Whether this module's custom ``autograd.Function`` s may run: not under torch.func
    transforms (``vmap``, ``grad``; they have no batching rules) nor autocast (their backward
    would mix autocast's dtypes). Otherwise the layers use the plain expressions they equal.
    A device type that has no autocast (the ``meta`` device the device tests run on) is not
    under it: asking torch whether autocast is on there raises instead of answering."""
    device_type = features.device.type
    autocast = torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)
    return not (functorch_transforms_active() or autocast)


def gradients_to_compute(ctx) -> Tuple[bool, ...]:
    """Which inputs of a custom ``autograd.Function`` its ``backward`` has to differentiate now.

    ``ctx.needs_input_grad`` only says which inputs required grad in the forward. When a backward
    asks for some tensors only (``autograd.grad(loss, atoms)``: MAML's inner loop with scope
    ``atoms``), the engine skips the branches that lead elsewhere, built-in ops skip computing
    their gradients, and so should these functions: otherwise the factored path computes every
    shared coefficient's gradient (as large a product as its forward) only for it to be dropped.
    The engine can say so for inputs that have a ``grad_fn`` (:func:`with_grad_fn` gives leaves
    one); otherwise, and outside a backward, ``needs_input_grad`` stands.
    """
    # The engine's answer (engine_will_execute) is what torch.autograd.graph.register_multi_grad_hook
    # relies on; where it has none, every gradient that needs_input_grad names is computed, as before.
    wanted = []
    for needed, (node, _) in zip(ctx.needs_input_grad, ctx.next_functions):
        if needed and node is not None:
            answer = engine_will_execute(node)
            if answer is not None:
                needed = answer
        wanted.append(bool(needed))
    return tuple(wanted)


def with_grad_fn(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``, or for a leaf that requires grad a view of it: the engine cannot tell a custom
    function whether a leaf's gradient is wanted (:func:`gradients_to_compute`), but it can for
    the view's node."""
    return tensor.view_as(tensor) if tensor.is_leaf and tensor.requires_grad else tensor
