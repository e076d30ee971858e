"""How many evaluation episodes to adapt together: the default of ``eval_batch``.

Batched evaluation (:meth:`MAML.evaluate_episodes`) stacks episodes and runs their adaptation as
one ``torch.func.vmap`` program. Under vmap a convolution whose weight differs per episode (every
adapted or ACDC-composed kernel) becomes one grouped convolution over the stack.

On a CPU the default is 1 (sequential), because there batching was measured *slower*: torch's
grouped-convolution kernels, above all their backward, cost more than the per-episode
convolutions they replace (2-core CPU, one thread, Conv4 and ResNet10 at 28 and 84 px:
0.25-0.8x the sequential episodes/s; ``benchmarks/evaluation.py`` measures it side by side).

On a GPU the default is the largest stack that an *estimate* of its memory fits in a quarter of
the free device memory, capped at :data:`MAX_EVAL_BATCH`. Memory grows with the stack: each
inner step keeps the activations of every stacked support image for its backward, and the query
forward holds those of every stacked query image. The estimate counts the elements of every leaf
module's output per image (one forward without graph, once per model and episode shape) and
multiplies by :data:`SAVED_PER_SUPPORT_IMAGE` for support images and by one for query images. It
is meant to keep the default safe, not to be exact; ``eval_batch`` overrides it.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

MAX_EVAL_BATCH = 16
# Activation copies an inner step holds per support image: saved forward outputs, BatchNorm's
# saved statistics and normalised input, and gradient buffers.
SAVED_PER_SUPPORT_IMAGE = 4
GPU_BUDGET_FRACTION = 0.25  # of the free device memory when the evaluation starts


def activation_elements_per_image(model: nn.Module, image_shape: Tuple[int, ...], dtype: torch.dtype,
                                  device: torch.device) -> int:
    """The number of elements all leaf modules of ``model`` output per image of ``image_shape``
    ``[C, H, W]`` (one forward of two images under ``no_grad``: batch-statistics BatchNorm needs
    more than one value per channel; training/eval mode as the model is)."""
    total = [0]

    def count(module, inputs, output):
        if isinstance(output, torch.Tensor):
            total[0] += output.numel()

    leaves = [module for module in model.modules() if not list(module.children())]
    handles = [module.register_forward_hook(count) for module in leaves]
    try:
        with torch.no_grad():
            model(torch.zeros((2, *image_shape), dtype=dtype, device=device))  # draws no random numbers
    finally:
        for handle in handles:
            handle.remove()
    return total[0] // 2


def default_eval_batch(model: nn.Module, episode) -> int:
    """``eval_batch``'s default for episodes shaped like ``episode`` (see the module docstring):
    1 on a CPU, a memory-bounded stack on a GPU."""
    device = next(model.parameters()).device
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    return episodes_per_batch(model, episode, int(GPU_BUDGET_FRACTION * free))


def episodes_per_batch(model: nn.Module, episode, budget_bytes: int, cap: int = MAX_EVAL_BATCH) -> int:
    """How many episodes shaped like ``episode`` fit ``budget_bytes`` by the estimate of the
    module docstring (at least 1, at most ``cap``)."""
    reference = next(model.parameters())
    elements = activation_elements_per_image(model, tuple(episode.support_images.shape[1:]), reference.dtype,
                                             reference.device)
    images = SAVED_PER_SUPPORT_IMAGE * episode.support_images.shape[0] + episode.query_images.shape[0]
    per_episode = max(1, elements * images * reference.element_size())
    return max(1, min(cap, budget_bytes // per_episode))
