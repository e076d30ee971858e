"""A small registry: ``create_backbone("resnet18", conv="acdc-net", atoms=8)``,
``create_backbone("resnet18", conv="basis", rank=16)``.

Every backbone is built from one :class:`~fewshot_acdc.nn.ConvFactory`, so each name works with
every conv kind; there is no model file per conv kind.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Union

from torch import nn

from ..nn import ConvFactory, ConvSpec
from ..utils import closest_name
from .conv4 import Conv4
from .resnet import ResNet
from .vgg import VGG
from .wrn import WideResNet

BackboneBuilder = Callable[..., nn.Module]
_BACKBONES: Dict[str, BackboneBuilder] = {}


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    def decorator(builder: BackboneBuilder) -> BackboneBuilder:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is already registered")
        _BACKBONES[name] = builder
        return builder
    return decorator


def list_backbones() -> list:
    return sorted(_BACKBONES)


@register_backbone("conv4")
def _conv4(factory, num_classes, in_channels, image_size, track_running_stats):
    return Conv4(factory, num_classes, in_channels, image_size, track_running_stats=track_running_stats)


def _few_shot_resnet(blocks):
    def build(factory, num_classes, in_channels, image_size, track_running_stats):
        return ResNet(blocks, factory, num_classes, in_channels, "imagenet", track_running_stats)
    return build


register_backbone("resnet10")(_few_shot_resnet((1, 1, 1, 1)))
register_backbone("resnet18")(_few_shot_resnet((2, 2, 2, 2)))
register_backbone("resnet34")(_few_shot_resnet((3, 4, 6, 3)))


@register_backbone("resnet18-cifar")
def _resnet18_cifar(factory, num_classes, in_channels, image_size, track_running_stats):
    return ResNet((2, 2, 2, 2), factory, num_classes, in_channels, "cifar", track_running_stats)


@register_backbone("vgg16")
def _vgg16(factory, num_classes, in_channels, image_size, track_running_stats):
    return VGG(factory, num_classes, in_channels, track_running_stats=track_running_stats)


@register_backbone("wrn-40-4")
def _wrn_40_4(factory, num_classes, in_channels, image_size, track_running_stats):
    return WideResNet(40, 4, factory, num_classes, in_channels, track_running_stats)


def create_backbone(
    name: str,
    conv: Union[str, ConvSpec] = "standard",
    *,
    atoms: Optional[int] = None,
    rank: Optional[int] = None,
    bessel_atoms: Optional[int] = None,
    base_width: Optional[int] = None,
    group_size: Optional[int] = None,
    atom_drop: float = 0.0,
    num_classes: int = 5,
    in_channels: int = 3,
    image_size: int = 84,
    track_running_stats: bool = True,
) -> nn.Module:
    """Build backbone ``name`` with convolutions of kind ``conv``.

    Args:
        name: one of :func:`list_backbones` (``conv4``, ``resnet10``, ``resnet18``, ``resnet34``,
            ``resnet18-cifar``, ``vgg16``, ``wrn-40-4``).
        conv: a kind from :data:`~fewshot_acdc.nn.CONV_KINDS` or a ready :class:`ConvSpec`
            (then the size, ``group_size`` and ``atom_drop`` keywords are ignored).
        atoms, rank, bessel_atoms, base_width: the size of the kind, under its own name (give
            at most the one of ``conv``; default 8): ACDC's dictionary atoms m, BasisConv's rank
            r, DCF's Fourier-Bessel atoms K, learnable repetition's base width b. Another kind's
            name is a ValueError that names the right one.
        num_classes: outputs of the linear head (``ways`` for MAML).
        image_size: only Conv4 depends on it (its head sees flattened features); the ResNets,
            VGG and WRN pool globally and take any size.
        track_running_stats: ``False`` for MAML (transductive batch-statistics BN, see
            :func:`~fewshot_acdc.models.common.batch_norm`).
    """
    if name not in _BACKBONES:
        raise ValueError(
            f"unknown backbone {name!r}{closest_name(name, _BACKBONES)}; accepted: {', '.join(list_backbones())}"
        )
    spec = conv if isinstance(conv, ConvSpec) else ConvSpec.sized(
        conv, group_size=group_size, atom_drop=atom_drop,
        atoms=atoms, rank=rank, bessel_atoms=bessel_atoms, base_width=base_width)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    return _BACKBONES[name](ConvFactory(spec), num_classes, in_channels, image_size, track_running_stats)
