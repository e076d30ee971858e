"""BasisConv: fixed basis filters followed by a learned 1x1 combination.

After Tayyab & Mahalanobis, *BasisConv: A method for compressed representation and learning in
CNNs*. A ``k x k`` convolution ``W`` of shape ``(C_out, C_in, kh, kw)`` is replaced by two
successive convolutions::

    y = conv2d(x, B)            B: (r, C_in, kh, kw)  fixed basis filters (a buffer, never trained)
    z = conv2d(y, A[:, :, None, None]) + bias          A: (C_out, r)  learned 1x1 combination

so the effective kernel is ``W[o] = sum_j A[o, j] * B[j]`` (rank ``r`` when flattened to
``(C_out, C_in*kh*kw)``). Stride, padding and dilation belong to the first convolution.

* **From scratch** (what the conv factory builds for kind ``basis``): ``B`` is random orthogonal,
  its ``r`` flattened filters orthonormal rows of ``R^(C_in*kh*kw)`` (QR of a Gaussian matrix),
  and ``A ~ N(0, 2/r)``, so each kernel entry has on average the Kaiming (fan-in, ReLU) variance
  ``2 / (C_in*kh*kw)``.
* **Converting a trained model** (:func:`fewshot_acdc.nn.conversion.convert_to_basisconv`): ``B`` is the truncated
  eigen-decomposition of the layer's filters (the top ``r`` right singular vectors of the
  flattened kernel, i.e. the eigenvectors of ``W^T W``) and ``A = U_r S_r`` the weights of the
  linear combination, so the converted layer is the best rank-``r`` approximation of ``W`` in
  the Frobenius norm; its relative error is ``sqrt(sum_{i>r} s_i^2 / sum_i s_i^2)``.

Only ``A`` (and a bias, if any) are parameters; ``B`` is a persistent buffer, so it is saved in
checkpoints, moved by ``.to()``, and never seen by optimizers or the MAML inner loop.
Trainable parameters per layer: ``C_out * r`` (+ ``C_out`` bias); fixed: ``r * C_in * kh * kw``.

The conversion (model surgery) lives in :mod:`fewshot_acdc.nn.conversion`; the command line
(``python -m fewshot_acdc.cli.convert``) converts a run's checkpoint, see :mod:`fewshot_acdc.runs.conversion`.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .decomposed import DecomposedConv2d, IntPair


def random_orthogonal_basis(
    rank: int, in_channels: int, kernel_size: Tuple[int, int], *,
    generator: Optional[torch.Generator] = None, dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``rank`` filters ``(rank, C_in, kh, kw)`` whose flattened rows are orthonormal.

    Haar-distributed: QR of a standard Gaussian ``(C_in*kh*kw, rank)`` matrix with the signs of
    ``R``'s diagonal folded into ``Q``.
    """
    kernel_h, kernel_w = kernel_size
    dimension = in_channels * kernel_h * kernel_w
    if rank > dimension:
        raise ValueError(f"rank {rank} exceeds C_in*kh*kw = {dimension}: at most {dimension} orthonormal filters exist")
    gaussian = torch.randn(dimension, rank, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0
    q = q * signs
    return q.T.contiguous().reshape(rank, in_channels, kernel_h, kernel_w).to(dtype)


def validate_rank(rank: object, in_channels: int, kernel_size: Tuple[int, int]) -> int:
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"rank must be an integer >= 1 (basis filters per layer), got {rank!r}")
    dimension = in_channels * kernel_size[0] * kernel_size[1]
    if rank > dimension:
        raise ValueError(
            f"rank={rank} exceeds C_in*kh*kw = {in_channels}*{kernel_size[0]}*{kernel_size[1]} = {dimension}, "
            f"the most linearly independent {kernel_size[0]}x{kernel_size[1]} filters on {in_channels} channels"
        )
    return rank


class BasisConv2d(DecomposedConv2d):
    """Fixed basis filters (buffer ``basis``) followed by a learned 1x1 ``combination``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as ``nn.Conv2d``.
        rank: number of basis filters ``r`` (``1 <= r <= C_in*kh*kw``).
        basis: a given ``(r, C_in, kh, kw)`` basis (e.g. from :func:`convert_to_basisconv`);
            ``None`` draws a random orthogonal one (from ``generator`` or torch's global RNG).
            ``rank`` may then be omitted.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: Union[IntPair, str] = 0,
        dilation: IntPair = 1,
        bias: bool = False,
        *,
        rank: Optional[int] = None,
        basis: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation)
        if basis is None:
            if rank is None:
                raise ValueError("BasisConv2d needs a rank (number of basis filters) or a basis tensor")
            validate_rank(rank, in_channels, self.kernel_size)
            basis = random_orthogonal_basis(rank, in_channels, self.kernel_size, generator=generator)
        else:
            expected_tail = (in_channels, *self.kernel_size)
            if basis.dim() != 4 or tuple(basis.shape[1:]) != expected_tail:
                raise ValueError(
                    f"basis must have shape (rank, {in_channels}, {self.kernel_size[0]}, {self.kernel_size[1]}), "
                    f"got {tuple(basis.shape)}"
                )
            if rank is not None and rank != basis.shape[0]:
                raise ValueError(f"rank={rank} but the given basis has {basis.shape[0]} filters")
            validate_rank(basis.shape[0], in_channels, self.kernel_size)
            basis = basis.detach().clone()
        self.rank = basis.shape[0]
        self.register_buffer("basis", basis)
        self.combination = nn.Parameter(torch.empty(out_channels, self.rank, dtype=basis.dtype))
        self.bias = nn.Parameter(torch.zeros(out_channels, dtype=basis.dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``combination ~ N(0, 2/r)``: with orthonormal basis rows the kernel entries then have
        mean variance ``2 / (C_in*kh*kw)``, Kaiming's (fan-in, ReLU)."""
        nn.init.normal_(self.combination, std=math.sqrt(2.0 / self.rank))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def kernel(self) -> torch.Tensor:
        """The equivalent single convolution kernel ``(C_out, C_in, kh, kw)``."""
        flat = self.combination @ self.basis.reshape(self.rank, -1)
        return flat.reshape(self.out_channels, self.in_channels, *self.kernel_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        projected = F.conv2d(features, self.basis, None, self.stride, self.padding, self.dilation)
        return F.conv2d(projected, self.combination[:, :, None, None], self.bias)

    def extra_repr(self) -> str:
        parts = [f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}",
                 f"stride={self.stride}", f"padding={self.padding}", f"rank={self.rank}"]
        if self.dilation != (1, 1):
            parts.append(f"dilation={self.dilation}")
        if self.bias is None:
            parts.append("bias=False")
        return ", ".join(parts)
