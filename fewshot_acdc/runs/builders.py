"""Builders: a :class:`~fewshot_acdc.config.TrainConfig` in, the objects of a run out."""
from __future__ import annotations

import torch
from torch import nn

from ..config import TrainConfig
from ..meta import MAML
from ..models import create_backbone
from ..nn import ConvSpec, use_per_step_batchnorm


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
    return MAML(model, scope=config.adapt, inner_lr=config.inner_lr, inner_steps=config.inner_steps,
                inner_steps_eval=config.inner_steps_eval, first_order=config.first_order,
                task_batching=config.task_batching, learn_inner_lr=config.learn_inner_lr,
                multi_step_anneal=config.multi_step_anneal, head_init=config.head_init)


def build_optimizer(config: TrainConfig, maml: MAML) -> torch.optim.Optimizer:
    """Adam over every meta-parameter: the model's and, when learned, the inner step sizes."""
    return torch.optim.Adam(maml.meta_parameters(), lr=config.meta_lr)


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer):
    """The meta learning rate's schedule, stepped once per meta-step (``None``: constant)."""
    if config.meta_lr_schedule == "constant":
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.iterations, eta_min=config.meta_lr_min)
