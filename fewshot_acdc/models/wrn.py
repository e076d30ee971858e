"""Wide ResNet WRN-d-k (Zagoruyko & Komodakis) for CIFAR, pre-activation blocks; WRN-40-4 is in
the ACDC paper's Table 1. Each of the three stages is one ACDC-block scope."""
from __future__ import annotations

import torch
from torch import nn

from ..nn import ConvFactory
from .common import Backbone, batch_norm, shortcut_conv, stem_conv


class PreActBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, conv: ConvFactory,
                 block: str, track_running_stats: bool) -> None:
        super().__init__()
        self.bn1 = batch_norm(in_channels, track_running_stats)
        self.conv1 = conv(in_channels, out_channels, 3, stride, 1, block=block)
        self.bn2 = batch_norm(out_channels, track_running_stats)
        self.conv2 = conv(out_channels, out_channels, 3, 1, 1, block=block)
        self.relu = nn.ReLU(inplace=False)
        self.shortcut = (shortcut_conv(in_channels, out_channels, stride)
                         if stride != 1 or in_channels != out_channels else None)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        activated = self.relu(self.bn1(features))
        residual = self.conv1(activated)
        residual = self.conv2(self.relu(self.bn2(residual)))
        skip = features if self.shortcut is None else self.shortcut(activated)
        return residual + skip


class WideResNet(Backbone):
    def __init__(self, depth: int, widen_factor: int, conv: ConvFactory, num_classes: int,
                 in_channels: int = 3, track_running_stats: bool = True) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        self._start(conv)
        blocks_per_stage = (depth - 4) // 6
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.stem = stem_conv(in_channels, 16, 3, 1, 1)
        stages = []
        channels = 16
        for index, width in enumerate(widths):
            blocks = []
            for block_index in range(blocks_per_stage):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(PreActBlock(channels, width, stride, conv, f"stage{index + 1}", track_running_stats))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.final_norm = batch_norm(channels, track_running_stats)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self._finish(conv, channels, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.final_norm(self.stages(self.stem(images))))
        return torch.flatten(self.pool(out), 1)
