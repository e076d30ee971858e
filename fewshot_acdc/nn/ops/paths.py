"""The path choice: which of :mod:`.kernel` and :mod:`.factored` a layer takes for one call, and
the padding and output-size arithmetic both need."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

COMPUTE_PATHS: Tuple[str, ...] = ("auto", "kernel", "factored")


def conv_output_size(size, kernel_size, stride, padding, dilation) -> Tuple[int, int]:
    return tuple(  # type: ignore[return-value]
        (extent + 2 * pad - dil * (k - 1) - 1) // st + 1
        for extent, k, st, pad, dil in zip(size, kernel_size, stride, padding, dilation)
    )


def factored_is_smaller(compute: str, features: torch.Tensor, out_channels: int, in_per_group: int,
                        num_atoms: int, kernel_size: Tuple[int, int], stride: Tuple[int, int],
                        padding: Optional[Tuple[int, int]], dilation: Tuple[int, int]) -> bool:
    """The ``compute="auto"`` rule shared by every atoms-times-coefficients layer (ACDC, DCF).

    ``"kernel"``/``"factored"`` force a path; ``"auto"`` takes :func:`.factored.factored_conv2d` when what
    it keeps for backward (and creates again in the double backward), the unfolded input and the
    atom responses, is smaller than the kernel and the kernel's gradient. ``padding=None``
    (asymmetric ``"same"``) always composes the kernel.
    """
    if compute != "auto" or padding is None:
        return compute == "factored"
    height, width = conv_output_size(features.shape[-2:], kernel_size, stride, padding, dilation)
    taps = kernel_size[0] * kernel_size[1]
    factored = features.shape[0] * features.shape[1] * (taps + num_atoms) * height * width
    composed = 2 * out_channels * in_per_group * taps
    return factored < composed


def explicit_padding(padding: Union[Tuple[int, int], str], kernel_size: Tuple[int, int],
                     dilation: Tuple[int, int]) -> Optional[Tuple[int, int]]:
    """``padding`` as a pair of ints (``"valid"``: 0; ``"same"``: half the dilated kernel), or
    ``None`` when ``"same"`` must pad one side more than the other (an even dilated kernel)."""
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        spans = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
        return None if any(span % 2 for span in spans) else (spans[0] // 2, spans[1] // 2)
    return padding  # type: ignore[return-value]
