"""Builders: a :class:`~fewshot_acdc.config.TrainConfig` in, the objects of a run out."""
from __future__ import annotations

import torch
from torch import nn

from ..config import TrainConfig
from ..meta import MAML
from ..models import create_backbone
from ..nn import ConvSpec, use_per_step_batchnorm
from ..nn.scaling import learning_rate_scales


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU. ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device (use --device auto or cpu)")
    return torch.device(name)


def build_model(config: TrainConfig, in_channels: int, num_classes: int = None) -> nn.Module:
    """The backbone for MAML: batch-statistics BN (``track_running_stats=False``), ``ways`` outputs."""
    model = create_backbone(
        config.backbone, ConvSpec(config.conv, config.size, config.group_size, config.atom_drop),
        num_classes=num_classes or config.ways, in_channels=in_channels,
        image_size=config.image_size, track_running_stats=False,
    )
    if config.batchnorm == "per-step":
        use_per_step_batchnorm(model, config.inner_steps)
    return model


def build_maml(config: TrainConfig, model: nn.Module) -> MAML:
    # The inner loop takes SGD steps, which lr_scaling leaves as they are (nn/scaling.py says why).
    return MAML(model, scope=config.adapt, inner_lr=config.inner_lr, inner_steps=config.inner_steps,
                inner_steps_eval=config.inner_steps_eval, first_order=config.first_order,
                task_batching=config.task_batching, learn_inner_lr=config.learn_inner_lr,
                multi_step_anneal=config.multi_step_anneal, head_init=config.head_init,
                recompute_inner_steps=config.recompute_inner_steps)


def build_optimizer(config: TrainConfig, maml: MAML) -> torch.optim.Optimizer:
    """The outer loop's optimiser over every meta-parameter: the model's and, when learned, the
    inner step sizes."""
    named = dict(maml.model.named_parameters())
    extra = list(maml.step_sizes.parameters())
    return make_optimizer(config.meta_optimizer, named, config.meta_lr, config.weight_decay, config.momentum,
                          learning_rate_scales(maml.model, config.lr_scaling, config.meta_optimizer), extra=extra)


def make_optimizer(name: str, named_parameters, lr: float, weight_decay: float, momentum: float,
                   scales, extra=()) -> torch.optim.Optimizer:
    """``name`` (adam | adamw | sgd with Nesterov momentum) over ``named_parameters`` (name ->
    tensor), in one param group per learning-rate scale (``scales``: name -> multiplier of ``lr``,
    1 when absent; each group records its ``scale``, so a changed base rate keeps the ratios) and
    ``extra`` tensors at scale 1."""
    by_scale = {}
    for parameter_name, parameter in named_parameters.items():
        by_scale.setdefault(float(scales.get(parameter_name, 1.0)), []).append(parameter)
    if extra:
        by_scale.setdefault(1.0, []).extend(extra)
    groups = [{"params": params, "lr": lr * scale, "scale": scale} for scale, params in by_scale.items()]
    if name == "adamw":  # decoupled decay shrinks by lr * weight_decay: the same fraction at every scale
        for group in groups:
            group["weight_decay"] = weight_decay / group["scale"]
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay)
    raise ValueError(f"optimizer {name!r} is not one of adam, adamw, sgd")


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer):
    """The meta learning rate's schedule, stepped once per meta-step (``None``: constant)."""
    if config.meta_lr_schedule == "constant":
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.iterations, eta_min=config.meta_lr_min)
