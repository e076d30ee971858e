"""ResNets: the few-shot ResNet10/18/34 of "A Closer Look at Few-shot Classification" and the
CIFAR ResNet18 of the ACDC paper's Table 1. Every 3x3 convolution comes from the conv factory;
each stage (equal width and feature size) is one ACDC-block sharing scope."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..nn import ConvFactory
from .common import Backbone, batch_norm, shortcut_conv, stem_conv

STAGE_WIDTHS = (64, 128, 256, 512)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BN, a ReLU between them and after the residual sum;
    a 1x1 convolution + BN shortcut where the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, conv: ConvFactory,
                 block: str, track_running_stats: bool) -> None:
        super().__init__()
        self.conv1 = conv(in_channels, out_channels, 3, stride, 1, block=block)
        self.bn1 = batch_norm(out_channels, track_running_stats)
        self.conv2 = conv(out_channels, out_channels, 3, 1, 1, block=block)
        self.bn2 = batch_norm(out_channels, track_running_stats)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                shortcut_conv(in_channels, out_channels, stride), batch_norm(out_channels, track_running_stats)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(features)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(features))


class ResNet(Backbone):
    """ResNet with BasicBlocks.

    Args:
        blocks_per_stage: e.g. ``(1, 1, 1, 1)`` for ResNet10, ``(2, 2, 2, 2)`` for ResNet18.
        stem: ``"imagenet"`` (7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max-pool: the few-shot
            ResNets) or ``"cifar"`` (3x3 stride-1 conv, BN, ReLU: CIFAR-10 ResNet18).
        Global average pooling before the head, so any image size >= 32 px works (84 and 224).
    """

    def __init__(self, blocks_per_stage: Sequence[int], conv: ConvFactory, num_classes: int,
                 in_channels: int = 3, stem: str = "imagenet", track_running_stats: bool = True) -> None:
        super().__init__()
        self._start(conv)
        if stem == "imagenet":
            self.stem = nn.Sequential(
                stem_conv(in_channels, 64, 7, 2, 3), batch_norm(64, track_running_stats),
                nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
            )
        elif stem == "cifar":
            self.stem = nn.Sequential(
                stem_conv(in_channels, 64, 3, 1, 1), batch_norm(64, track_running_stats), nn.ReLU(inplace=True),
            )
        else:
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        stages = []
        width_in = 64
        for index, (count, width) in enumerate(zip(blocks_per_stage, STAGE_WIDTHS)):
            stride = 1 if index == 0 else 2
            blocks = []
            for block_index in range(count):
                blocks.append(BasicBlock(width_in, width, stride if block_index == 0 else 1, conv,
                                         f"stage{index + 1}", track_running_stats))
                width_in = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self._finish(conv, width_in, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.stages(self.stem(images))), 1)
