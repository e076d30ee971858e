"""The kernel path: compose the full kernel from coefficients and atoms, then one convolution."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

from .autograd import custom_autograd_applies, gradients_to_compute, with_grad_fn
from .paths import explicit_padding


def compose_kernel(coefficients: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
    """Combine ``coefficients`` ``(O, s, m)`` with ``atoms`` ``(G, m, kh, kw)``.

    Returns the grouped-convolution kernel ``(G * O, s, kh, kw)``: group ``g``'s output channels
    are ``g * O ... (g + 1) * O - 1``, as :func:`torch.nn.functional.conv2d` expects.
    """
    out_per_group, in_per_group, num_atoms = coefficients.shape
    groups, _, kernel_h, kernel_w = atoms.shape
    coefficient_rows = coefficients.reshape(out_per_group * in_per_group, num_atoms)
    if groups == 1:
        # A plain 2D product writes the kernel in place; the broadcast (1, m, k) form below would
        # compute it transposed and copy it (a kernel-sized copy per layer and forward).
        kernel = coefficient_rows.mm(atoms.reshape(num_atoms, kernel_h * kernel_w))
    else:
        # One (O*s, m) x (m, kh*kw) matrix product per group: a single batched matmul.
        kernel = torch.matmul(coefficient_rows, atoms.reshape(groups, num_atoms, kernel_h * kernel_w))
    return kernel.reshape(groups * out_per_group, in_per_group, kernel_h, kernel_w)


class _ComposedKernelConv2d(torch.autograd.Function):
    """``conv2d(x, compose_kernel(A, D))`` that keeps ``x``, ``A`` and ``D`` for backward, not the kernel.

    Why: autograd would keep the composed kernel (as large as a standard conv's weight) from the
    forward until the backward. In MAML's query pass and in every first-order pass that kernel
    is pure overhead over a standard convolution, whose weight is the parameter itself; here it
    is composed again in the backward (one small matrix product). The backward is written with
    differentiable ops (``aten.convolution_backward`` has a derivative), so when it runs under
    ``create_graph=True`` (second-order MAML's inner loop) it records its own graph and the
    double backward is exact; what that graph keeps (kernel, kernel gradient) is what the plain
    composition kept.
    """

    @staticmethod
    def forward(ctx, features, coefficients, atoms, stride, padding, dilation, groups):
        ctx.geometry = (stride, padding, dilation, groups)
        ctx.save_for_backward(features, coefficients, atoms)
        return F.conv2d(features, compose_kernel(coefficients, atoms), None, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_output):
        features, coefficients, atoms = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.geometry
        need_features, need_coefficients, need_atoms = gradients_to_compute(ctx)[:3]
        kernel = compose_kernel(coefficients, atoms)
        grad_features, grad_kernel, _ = torch.ops.aten.convolution_backward(
            grad_output, features, kernel, None, stride, padding, dilation, False, (0, 0), groups,
            (need_features, need_coefficients or need_atoms, False))
        grad_coefficients = grad_atoms = None
        if grad_kernel is not None:
            # kernel[g, o*s] = coefficients[o*s] @ atoms[g]  (see compose_kernel)
            out_per_group, in_per_group, num_atoms = coefficients.shape
            num_groups, _, kernel_h, kernel_w = atoms.shape
            rows, taps = out_per_group * in_per_group, kernel_h * kernel_w
            if num_groups == 1:  # 2D products: no group dimension to sum over or copy
                grad_kernel = grad_kernel.reshape(rows, taps)
                atom_rows = atoms.reshape(num_atoms, taps)
                if need_coefficients:
                    grad_coefficients = grad_kernel.mm(atom_rows.t()).reshape(coefficients.shape)
                if need_atoms:
                    grad_atoms = coefficients.reshape(rows, num_atoms).t().mm(grad_kernel).reshape(atoms.shape)
            else:
                grad_kernel = grad_kernel.reshape(num_groups, rows, taps)
                atom_rows = atoms.reshape(num_groups, num_atoms, taps)
                if need_coefficients:
                    grad_coefficients = torch.matmul(grad_kernel, atom_rows.transpose(1, 2)).sum(0)
                    grad_coefficients = grad_coefficients.reshape(coefficients.shape)
                if need_atoms:
                    coefficient_rows = coefficients.reshape(rows, num_atoms)
                    grad_atoms = torch.matmul(coefficient_rows.t(), grad_kernel).reshape(atoms.shape)
        return grad_features, grad_coefficients, grad_atoms, None, None, None, None


def composed_conv2d(features: torch.Tensor, coefficients: torch.Tensor, atoms: torch.Tensor,
                    bias: Optional[torch.Tensor], stride: Tuple[int, int], padding: Union[Tuple[int, int], str],
                    dilation: Tuple[int, int], groups: int) -> torch.Tensor:
    """The grouped ACDC convolution through its composed kernel (:func:`compose_kernel`).

    Equal to ``F.conv2d(features, compose_kernel(coefficients, atoms), bias, ...)`` to second
    order, but the kernel is not kept between forward and backward (:class:`_ComposedKernelConv2d`).
    Under torch.func transforms and autocast (:func:`custom_autograd_applies`) and with asymmetric
    ``"same"`` padding it is exactly that plain expression (``convolution_backward`` wants one
    padding per side pair).
    """
    if isinstance(padding, str):
        padding = explicit_padding(padding, tuple(atoms.shape[-2:]), dilation) or padding
    if isinstance(padding, str) or not custom_autograd_applies(features):
        return F.conv2d(features, compose_kernel(coefficients, atoms), bias, stride, padding, dilation, groups)
    output = _ComposedKernelConv2d.apply(with_grad_fn(features), with_grad_fn(coefficients), with_grad_fn(atoms),
                                         stride, padding, dilation, groups)
    return output if bias is None else output + bias.view(1, -1, 1, 1)
