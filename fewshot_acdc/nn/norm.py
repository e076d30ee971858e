"""MAML++'s per-step BatchNorm (Antoniou et al. 2019, "How to train your MAML", BNWB + BNRS).

The default BatchNorm of this toolkit normalises every batch with its own statistics, in the inner
loop and on the query set (transductive, as the reference MAML code). MAML++ instead gives each
inner step ``k`` its own BN weights and biases ("per-step batch normalisation weights and
biases") and its own running statistics ("per-step running statistics"): meta-training
forwards still normalise with batch statistics and fold them into step ``k``'s running
averages; in ``eval()`` the running statistics of step ``k`` are used, so a test query's
prediction does not depend on the other queries scored with it.

Which step a forward belongs to is not an argument of ``forward`` (the backbones and
``torch.func.functional_call`` know nothing of inner steps): the inner loop sets it with
:func:`inner_step` around each forward. Outside any :func:`inner_step`, step 0 is used. A step
beyond the trained number (evaluation adapting longer) uses the last step's parameters and
statistics.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

_STEP: contextvars.ContextVar[int] = contextvars.ContextVar("fewshot_acdc_inner_step", default=0)

from ..vocabulary import BATCHNORM_CHOICES  # noqa: F401  (re-exported: the choices this module implements)


@contextlib.contextmanager
def inner_step(step: int) -> Iterator[None]:
    """Forwards inside run as inner step ``step`` (0-based) for :class:`PerStepBatchNorm2d`."""
    token = _STEP.set(step)
    try:
        yield
    finally:
        _STEP.reset(token)


def current_inner_step() -> int:
    return _STEP.get()


class PerStepBatchNorm2d(nn.Module):
    """BatchNorm over ``[N, C, H, W]`` with a weight, bias and running statistics per inner step.

    ``weight``/``bias`` are ``[steps, C]`` parameters (one row per step: the inner loop adapts the
    row its forward uses, the others get no gradient from that forward); ``running_mean`` and
    ``running_var`` are ``[steps, C]`` buffers, updated (without gradient) by training-mode
    forwards and used by eval-mode forwards.
    """

    def __init__(self, num_features: int, steps: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"PerStepBatchNorm2d needs steps >= 1, got {steps}")
        self.num_features, self.steps, self.eps, self.momentum = num_features, steps, eps, momentum
        self.weight = nn.Parameter(torch.ones(steps, num_features))
        self.bias = nn.Parameter(torch.zeros(steps, num_features))
        self.register_buffer("running_mean", torch.zeros(steps, num_features))
        self.register_buffer("running_var", torch.ones(steps, num_features))

    @classmethod
    def from_batch_norm(cls, norm: nn.modules.batchnorm._BatchNorm, steps: int) -> "PerStepBatchNorm2d":
        """Every step starts from ``norm``'s affine parameters (ones and zeros when it has none)."""
        layer = cls(norm.num_features, steps, eps=norm.eps, momentum=norm.momentum if norm.momentum is not None else 0.1)
        like = next(iter(norm.parameters()), None)
        if like is not None:
            layer.to(device=like.device, dtype=like.dtype)
        with torch.no_grad():
            if norm.weight is not None:
                layer.weight.copy_(norm.weight.detach().expand(steps, -1))
            if norm.bias is not None:
                layer.bias.copy_(norm.bias.detach().expand(steps, -1))
        return layer

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        step = min(current_inner_step(), self.steps - 1)
        weight, bias = self.weight[step], self.bias[step]
        if not self.training:
            return F.batch_norm(input, self.running_mean[step], self.running_var[step], weight, bias,
                                training=False, eps=self.eps)
        output = F.batch_norm(input, None, None, weight, bias, training=True, eps=self.eps)
        with torch.no_grad():  # MAML++'s running averages: statistics, not part of the graph
            detached = input.detach()
            dims = [0, 2, 3]
            count = detached.numel() // detached.shape[1]
            mean = detached.mean(dims)
            variance = detached.var(dims, unbiased=False) * (count / max(count - 1, 1))
            self.running_mean[step].lerp_(mean.to(self.running_mean.dtype), self.momentum)
            self.running_var[step].lerp_(variance.to(self.running_var.dtype), self.momentum)
        return output

    def extra_repr(self) -> str:
        return f"{self.num_features}, steps={self.steps}, eps={self.eps}, momentum={self.momentum}"


def use_per_step_batchnorm(model: nn.Module, steps: int) -> nn.Module:
    """Replace every ``BatchNorm2d`` of ``model`` (in place) by a :class:`PerStepBatchNorm2d` for
    ``steps`` inner steps, initialised from it; returns ``model``."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            setattr(model, name, PerStepBatchNorm2d.from_batch_norm(child, steps))
        else:
            use_per_step_batchnorm(child, steps)
    return model


def has_per_step_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(module, PerStepBatchNorm2d) for module in model.modules())
