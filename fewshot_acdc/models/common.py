"""Pieces every backbone shares: the stem rule, normalization, and the backbone base class."""
from __future__ import annotations


import torch
from torch import nn

from ..nn import CoefficientBank, ConvFactory
from ..nn.sharing import nested_coefficient_slices


def batch_norm(channels: int, track_running_stats: bool = True) -> nn.BatchNorm2d:
    """BatchNorm with ``weight=1, bias=0``.

    ``track_running_stats=False`` (what MAML backbones use) normalizes with the statistics of the
    current batch in training *and* eval mode, the transductive BN of the reference MAML
    implementations; such a layer has no running buffers that inner-loop forwards could corrupt.
    """
    return nn.BatchNorm2d(channels, track_running_stats=track_running_stats)


def stem_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> nn.Conv2d:
    """The convolution on the raw image, which stays an ordinary convolution in every conv kind.

    Why: it sees 1-3 input channels, so its kernel is tiny (9,408 weights for ResNet's 7x7 stem,
    1,728 for a 3x3 one) and decomposing it saves nothing worth having; grouping cannot split 3
    channels into groups of 32; and the paper's parameter counts (Table 1) are consistent with it.
    """
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    return conv


def shortcut_conv(in_channels: int, out_channels: int, stride: int) -> nn.Conv2d:
    """1x1 projection shortcut, an ordinary convolution in every conv kind.

    Why: a 1x1 kernel has a single spatial position, so an atom is a scalar and ``m`` atoms would
    only add ``m`` coefficients per weight; there is no spatial structure to share.
    """
    conv = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    return conv


def linear_head(in_features: int, num_classes: int) -> nn.Linear:
    head = nn.Linear(in_features, num_classes)
    nn.init.zeros_(head.bias)
    return head


class Backbone(nn.Module):
    """Base class: ``coefficient_bank`` registered first, ``features()`` then ``head``.

    Subclasses call :meth:`_start` at the top of ``__init__`` and :meth:`_finish` at the end.
    """

    feature_dim: int

    def _start(self, factory: ConvFactory) -> None:
        # Registered before any layer so that shared tensors are named coefficient_bank.<scope>.
        self.coefficient_bank = CoefficientBank()
        self.conv_spec = factory.spec

    def _finish(self, factory: ConvFactory, feature_dim: int, num_classes: int) -> None:
        factory.finalize(self.coefficient_bank)
        self.feature_dim = feature_dim
        self.head = linear_head(feature_dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The features the head classifies: ``forward(x) == head(embed(x))``."""
        # Shared coefficient tensors are sliced once per shape and nested (nn/sharing.py): the
        # same function, with far cheaper gradients than one full-size slice gradient per layer.
        with nested_coefficient_slices(self):
            return self.features(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(images))
