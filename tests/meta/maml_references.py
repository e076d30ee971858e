"""Reference meta-gradients as ``{name: tensor}`` dicts, for comparing with the engine.

The learn2learn and higher computations themselves live in :mod:`fewshot_acdc.meta.references`
(shared with benchmarks/maml_step.py); this wrapper skips when a library is missing and copies
the gradients out of the model.
"""
from __future__ import annotations

from typing import Dict

import torch

from fewshot_acdc.meta.references import REFERENCE_META_GRADIENTS
from .maml_testing import import_reference


def _gradients(model) -> Dict[str, torch.Tensor]:
    return {name: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
            for name, p in model.named_parameters()}


def _reference(name: str):
    def meta_gradient(model, *args) -> Dict[str, torch.Tensor]:
        import_reference(name)  # skips the test when the library is not installed
        REFERENCE_META_GRADIENTS[name](model, *args)
        return _gradients(model)
    return meta_gradient


REFERENCES = {name: _reference(name) for name in REFERENCE_META_GRADIENTS}
