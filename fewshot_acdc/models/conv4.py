"""Conv4: four [3x3 conv (64), BN, ReLU, 2x2 max-pool] blocks and a linear head on the flattened
features, the standard small few-shot backbone (MAML; "A Closer Look", Conv-4)."""
from __future__ import annotations

import torch
from torch import nn

from ..nn import ConvFactory
from .common import Backbone, batch_norm, stem_conv


class Conv4(Backbone):
    """Each conv has its own feature size, so under ``acdc-block`` every conv is its own block
    (the paper's block is a run of layers of equal width *and* feature size). The first conv
    sees the raw image and stays ordinary (see :func:`stem_conv`)."""

    def __init__(self, conv: ConvFactory, num_classes: int, in_channels: int = 3, image_size: int = 84,
                 width: int = 64, track_running_stats: bool = True) -> None:
        super().__init__()
        self._start(conv)
        if image_size < 16:
            raise ValueError(f"Conv4 needs images of at least 16 px (four 2x2 poolings), got {image_size}")
        layers = []
        channels = in_channels
        for index in range(4):
            conv_layer = (stem_conv(channels, width, 3, 1, 1) if index == 0
                          else conv(channels, width, 3, 1, 1, block=f"conv{index + 1}"))
            layers.append(nn.Sequential(conv_layer, batch_norm(width, track_running_stats),
                                        nn.ReLU(inplace=True), nn.MaxPool2d(2)))
            channels = width
        self.blocks = nn.Sequential(*layers)
        spatial = image_size
        for _ in range(4):
            spatial //= 2
        self.image_size = image_size
        self._finish(conv, width * spatial * spatial, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(
                f"this Conv4 was built for {self.image_size} px images (its head size depends on it), "
                f"got {tuple(images.shape[-2:])}; pass image_size= to create_backbone"
            )
        return torch.flatten(self.blocks(images), 1)
