"""The one place this package calls private torch API (``torch._C``); everything else asks here.

Two questions have no public answer in torch 2.x:

* :func:`functorch_transforms_active`: whether a torch.func transform (``vmap``, ``grad``,
  ``jacrev``) is running. Custom ``autograd.Function`` s without ``setup_context``/``vmap`` rules
  cannot run under one, so the layers fall back to the plain expressions they equal.
* :func:`engine_will_execute`: whether the autograd engine, inside a backward, will run a given
  graph node: i.e. whether a gradient along that edge is wanted at all
  (``torch.autograd.graph.register_multi_grad_hook`` relies on the same query). ``None`` when this
  torch has no such query or cannot answer for the node (a leaf's node under ``autograd.grad``,
  or outside a backward): the caller then computes what ``ctx.needs_input_grad`` names.

If a torch release renames or removes either, this module is what to change; the fallbacks keep
the functions computed the same (only slower: every gradient that ``needs_input_grad`` names).
"""
from __future__ import annotations

from typing import Optional

import torch

_are_functorch_transforms_active = getattr(torch._C, "_are_functorch_transforms_active", None)
_will_engine_execute_node = getattr(torch._C, "_will_engine_execute_node", None)


def functorch_transforms_active() -> bool:
    """Whether a torch.func transform is active (``False`` on a torch without the query)."""
    return bool(_are_functorch_transforms_active()) if _are_functorch_transforms_active is not None else False


def engine_will_execute(node) -> Optional[bool]:
    """Whether the running backward will execute ``node``; ``None`` if the engine cannot say."""
    if _will_engine_execute_node is None:
        return None
    try:
        return bool(_will_engine_execute_node(node))
    except RuntimeError:  # a leaf's node under autograd.grad, or not inside a backward
        return None
