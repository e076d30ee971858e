"""The factored path: atom responses of the unfolded input, combined by the coefficients; the
kernel is never built."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .autograd import custom_autograd_applies, gradients_to_compute, with_grad_fn
from .paths import conv_output_size


class _CoefficientProduct(torch.autograd.Function):
    """``coefficient_matrix @ responses`` whose gradients, at every order, come out contiguous.

    Why: autograd's backward of ``A @ R`` forms the responses' gradient as ``A.t() @ G``. Under
    second-order MAML that product is in the graph, and its own backward hands ``A`` a
    *transposed* gradient; added to the contiguous gradients of the other layers sharing ``A``
    (and scattered into the shared coefficient tensor), a transposed ``C_out x C_in*m`` matrix is
    read across rows, several times slower than a contiguous one. Writing the responses'
    gradient as ``(G.t() @ A).t()`` gives the same values and a contiguous gradient for ``A``
    in the double backward. The backward is differentiable code, so every order is exact.
    """

    @staticmethod
    def forward(ctx, coefficient_matrix, responses):
        ctx.save_for_backward(coefficient_matrix, responses)
        return coefficient_matrix.mm(responses)

    @staticmethod
    def backward(ctx, grad_output):
        coefficient_matrix, responses = ctx.saved_tensors
        need_coefficients, need_responses = gradients_to_compute(ctx)
        grad_coefficients = grad_responses = None
        if need_coefficients:
            grad_coefficients = grad_output.mm(responses.t())
        if need_responses:
            grad_responses = grad_output.t().mm(coefficient_matrix).t()
        return grad_coefficients, grad_responses


def coefficient_product(coefficient_matrix: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
    """``coefficient_matrix.mm(responses)``, the factored path's second product, differentiated
    through :class:`_CoefficientProduct` where custom functions apply."""
    if not custom_autograd_applies(responses):
        return coefficient_matrix.mm(responses)
    return _CoefficientProduct.apply(with_grad_fn(coefficient_matrix), with_grad_fn(responses))


def factored_conv2d(
    features: torch.Tensor, coefficients: torch.Tensor, atoms: torch.Tensor, bias: Optional[torch.Tensor],
    stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int],
) -> torch.Tensor:
    """The grouped ACDC convolution without building its kernel: atoms first, coefficients second.

    ``conv(x, compose_kernel(A, D))`` equals the response of every input channel to its group's
    ``m`` atoms (``C_in * m`` maps) combined by a 1x1 convolution whose weights are the
    coefficients, because the kernel is linear in the atoms::

        y[o] = sum_c W[o, c] * x[c] = sum_c sum_j A[o, c, j] (D[j] * x[c])

    Both steps are matrix products on the unfolded input (im2col), so the forward, backward and
    double backward (second-order MAML) are plain GEMMs; a depthwise convolution would compute
    the same responses, but torch's CPU double backward runs one convolution per channel for it.
    Output channels are ordered as with :func:`compose_kernel` (group ``g``'s outputs are
    ``g * O ... (g + 1) * O - 1``); the groups share the coefficients, so they are folded into
    the batch for the second product instead of repeating the coefficients.
    """
    out_per_group, in_per_group, num_atoms = coefficients.shape
    groups, _, kernel_h, kernel_w = atoms.shape
    batch, taps = features.shape[0], kernel_h * kernel_w
    patches = F.unfold(features, (kernel_h, kernel_w), dilation, padding, stride)  # (B, G * s * k, L)
    positions = patches.shape[-1]
    # Two plain matrix products (no broadcast batch dimension, whose backward would materialize one
    # copy of the coefficients per image before summing):
    #   atoms (G, m, k) @ patches (G, k, B*s*L)               -> responses (G, m, B, s, L)
    #   coefficients (O, s*m) @ responses (s*m, B*G*L)        -> output (O, B, G, L)
    patches = patches.reshape(batch, groups, in_per_group, taps, positions).permute(1, 3, 0, 2, 4)
    responses = torch.matmul(atoms.reshape(groups, num_atoms, taps),
                             patches.reshape(groups, taps, batch * in_per_group * positions))
    responses = responses.reshape(groups, num_atoms, batch, in_per_group, positions).permute(3, 1, 2, 0, 4)
    output = coefficient_product(coefficients.reshape(out_per_group, in_per_group * num_atoms),
                                 responses.reshape(in_per_group * num_atoms, batch * groups * positions))
    output = output.reshape(out_per_group, batch, groups, positions).permute(1, 2, 0, 3)
    height, width = conv_output_size(features.shape[-2:], (kernel_h, kernel_w), stride, padding, dilation)
    output = output.reshape(batch, groups * out_per_group, height, width)
    if bias is not None:
        output = output + bias.view(1, -1, 1, 1)
    return output
