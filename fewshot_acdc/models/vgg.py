"""VGG16 for CIFAR-10 (ACDC paper, Table 1): 13 3x3 convs with BN, no conv bias, one linear head.
Each run of convs between two poolings (64, 128, 256, 512, 512) is one ACDC-block scope."""
from __future__ import annotations

import torch
from torch import nn

from ..nn import ConvFactory
from .common import Backbone, batch_norm, stem_conv

VGG16_GROUPS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class VGG(Backbone):
    def __init__(self, conv: ConvFactory, num_classes: int, in_channels: int = 3,
                 groups=VGG16_GROUPS, track_running_stats: bool = True) -> None:
        super().__init__()
        self._start(conv)
        layers = []
        channels = in_channels
        for group_index, widths in enumerate(groups):
            for width in widths:
                conv_layer = (stem_conv(channels, width, 3, 1, 1) if not layers
                              else conv(channels, width, 3, 1, 1, block=f"group{group_index + 1}"))
                layers += [conv_layer, batch_norm(width, track_running_stats), nn.ReLU(inplace=True)]
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self._finish(conv, channels, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.body(images)), 1)
