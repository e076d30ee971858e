"""MAML's BatchNorm policy: batch statistics only; models with running statistics are refused.

(Also here: :class:`DecomposedBatchNorm`, the workaround that makes BatchNorm differentiate
correctly to second order inside ``torch.func.vmap``.)

The functional inner loop hands ``torch.func.functional_call`` the parameters but not the
buffers, so a BatchNorm layer that tracks running statistics would update the *model's*
buffers in place on every inner-loop forward (every step of every task, with support batches
and adapted weights): running statistics that belong to no parameter set, silently. Rather than
put such layers into some mode behind the user's back, MAML refuses them; build the backbone
with ``create_backbone(..., track_running_stats=False)``.
"""
from __future__ import annotations

import inspect
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode


def modules_with_running_stats(model: nn.Module) -> List[str]:
    return [name or type(model).__name__ for name, module in model.named_modules()
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats]


def check_no_running_stats(model: nn.Module) -> None:
    """Raise ``ValueError`` if a normalization layer of ``model`` tracks running statistics."""
    tracking = modules_with_running_stats(model)
    if tracking:
        shown = ", ".join(tracking[:3]) + (f" and {len(tracking) - 3} more" if len(tracking) > 3 else "")
        raise ValueError(
            f"MAML needs normalization layers without running statistics, but {shown} track them "
            f"(inner-loop forwards would overwrite them in place). Build the backbone with "
            f"create_backbone(..., track_running_stats=False): BatchNorm then always normalizes with "
            f"the statistics of the batch it sees (transductive, as the reference MAML implementations)."
        )


def batch_statistics_norm(input: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                          eps: float) -> torch.Tensor:
    """``F.batch_norm(input, None, None, weight, bias, training=True, eps=eps)`` from elementary ops."""
    dims = [0] + list(range(2, input.dim()))
    mean = input.mean(dim=dims, keepdim=True)
    variance = input.var(dim=dims, unbiased=False, keepdim=True)  # BN normalizes with the biased variance
    shape = [1, -1] + [1] * (input.dim() - 2)
    output = (input - mean) * torch.rsqrt(variance + eps)
    if weight is not None:
        output = output * weight.reshape(shape)
    if bias is not None:
        output = output + bias.reshape(shape)
    return output


class DecomposedBatchNorm(TorchFunctionMode):
    """Inside ``torch.func.vmap``, compute batch-statistics BatchNorm from elementary ops.

    Why: under ``vmap`` the batching rule of BatchNorm's double backward is wrong when the BN
    weight is batched (adapted per task): second-order meta-gradients of the tensors *upstream*
    of an adapted BN layer come out wrong by O(1) (torch 2.14.1; functorch issue #534, "layer_norm
    and batch_norm backward batching rule is incorrect for grad_input"; reproduced in
    tests/meta/test_maml_engine.py). Built from mean/var/rsqrt, the same function differentiates
    correctly. Calls with running statistics pass through unchanged.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            bound = _BATCH_NORM_SIGNATURE.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = bound.arguments
            if arguments["running_mean"] is None and arguments["running_var"] is None and arguments["training"]:
                return batch_statistics_norm(arguments["input"], arguments["weight"], arguments["bias"],
                                             arguments["eps"])
        return func(*args, **kwargs)


_BATCH_NORM_SIGNATURE = inspect.signature(F.batch_norm)
