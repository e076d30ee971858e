"""DCF: decomposed convolutional filters on fixed Fourier-Bessel atoms (DCFNet, Qiu et al. 2018).

The kernel is an ACDC-style combination, but the ``K`` atoms are *fixed*: the ``K`` lowest-frequency
Fourier-Bessel functions of the unit disk sampled on the ``k x k`` grid, and every layer owns its
coefficients (no sharing)::

    W[o, c] = sum_j  A[o, c, j] * psi_j          A: (C_out, C_in, K) learned, psi: (K, k, k) fixed

Fourier-Bessel atoms (the Dirichlet eigenfunctions of the Laplacian on the unit disk)::

    psi_{n,q}(r, theta) = J_n(j_{n,q} r) / |J_{n+1}(j_{n,q})| * {1 (n = 0);  sqrt(2) cos(n theta), sqrt(2) sin(n theta) (n > 0)}

with ``j_{n,q}`` the ``q``-th positive zero of the Bessel function ``J_n`` (``scipy.special.jn_zeros``)
and eigenvalue ``j_{n,q}^2``: atoms are ordered by ``j_{n,q}`` (frequency), cosine before sine, and the
first ``K`` kept. Sampling follows DCFNet's reference code (``calculate_FB_bases``): for ``k = 2L + 1``
pixel ``(i, j)`` sits at ``((j - L), (i - L)) / (L + 0.5)`` and the functions are zero outside the
disk (``r >= 1``). A ``k x k`` kernel gets at most ``k^2 - 1`` atoms (DCFNet's ``maxK``) and at most
as many as stay linearly independent once sampled (corner pixels outside the disk are zero):
8 for 3x3, 20 for 5x5, 31 for 7x7 (:func:`max_fourier_bessel_atoms`). The ``K`` sampled atoms are scaled by one common constant so that their mean squared norm on the grid is 1
(DCFNet's normalization; it keeps the continuous functions' relative scale).

Coefficients start ``N(0, 2 / (C_in K))``, so each kernel entry has on average the Kaiming
(fan-in, ReLU) variance ``2 / (C_in k^2)``. Trainable parameters per layer: ``C_out * C_in * K``
(+ bias); fixed: ``K * k^2`` (a buffer, saved in checkpoints, never trained).
"""
from __future__ import annotations

import functools
import math
from typing import List, Tuple, Union

import numpy as np
import torch
from torch import nn

from .decomposed import DecomposedConv2d, IntPair
from .ops import compose_kernel, composed_conv2d, factored_conv2d

_MAX_ANGULAR = 40     # angular frequencies n searched: enough for kernels up to 25 x 25
_ZEROS_PER_ORDER = 40


@functools.lru_cache(maxsize=None)
def max_fourier_bessel_atoms(kernel_size: int) -> int:
    """The largest ``K <= k^2 - 1`` (DCFNet's ``maxK``) whose first ``K`` atoms, sampled on the
    ``k x k`` grid, are linearly independent: 8 for 3x3, 20 for 5x5, 31 for 7x7."""
    limit = kernel_size * kernel_size - 1
    sampled = _sampled_atoms(kernel_size, limit).reshape(limit, -1)
    for count in range(1, limit + 1):
        if np.linalg.matrix_rank(sampled[:count]) < count:
            return count - 1
    return limit


@functools.lru_cache(maxsize=None)
def fourier_bessel_frequencies(count: int) -> Tuple[Tuple[int, int, float, str], ...]:
    """The first ``count`` atoms as ``(n, q, j_{n,q}, "radial" | "cos" | "sin")``, by frequency."""
    from scipy import special
    zeros = sorted((float(z), n, q) for n in range(_MAX_ANGULAR + 1)
                   for q, z in enumerate(special.jn_zeros(n, _ZEROS_PER_ORDER), start=1))
    # Complete only below the smallest zero of an order not searched: j_{n,1} > n, j_{0,q} > pi (q - 1/4).
    bound = min(float(special.jn_zeros(_MAX_ANGULAR + 1, 1)[0]), math.pi * (_ZEROS_PER_ORDER + 0.75))
    atoms: List[Tuple[int, int, float, str]] = []
    for zero, n, q in zeros:
        if len(atoms) >= count:
            break
        if zero >= bound:
            raise ValueError(f"{count} Fourier-Bessel atoms need frequencies beyond those searched")
        atoms.extend([(n, q, zero, "radial")] if n == 0 else [(n, q, zero, "cos"), (n, q, zero, "sin")])
    return tuple(atoms[:count])


@functools.lru_cache(maxsize=None)
def _sampled_atoms(kernel_size: int, count: int) -> np.ndarray:
    """The first ``count`` atoms sampled on the grid, before the common normalization."""
    from scipy import special
    half = (kernel_size - 1) // 2
    radius = half + 0.5
    offsets = (np.arange(kernel_size) - half) / radius
    y, x = np.meshgrid(offsets, offsets, indexing="ij")   # row i -> y, column j -> x
    r = np.sqrt(x ** 2 + y ** 2)
    theta = np.arctan2(y, x)
    atoms = []
    for n, q, zero, part in fourier_bessel_frequencies(count):
        radial = special.jv(n, zero * r) / abs(special.jv(n + 1, zero))
        radial[r >= 1] = 0.0
        if part == "radial":
            atoms.append(radial)
        elif part == "cos":
            atoms.append(math.sqrt(2.0) * radial * np.cos(n * theta))
        else:
            atoms.append(math.sqrt(2.0) * radial * np.sin(n * theta))
    return np.stack(atoms)


@functools.lru_cache(maxsize=None)
def _fourier_bessel_numpy(kernel_size: int, count: int) -> np.ndarray:
    stacked = _sampled_atoms(kernel_size, count)
    scale = math.sqrt(np.mean(np.sum(stacked ** 2, axis=(1, 2))))
    return stacked / scale


def validate_dcf_arguments(kernel_size: Tuple[int, int], atoms: object) -> None:
    kernel_h, kernel_w = kernel_size
    if kernel_h != kernel_w or kernel_h < 3 or kernel_h % 2 == 0:
        raise ValueError(
            f"DCF needs a square kernel of odd size >= 3 (Fourier-Bessel atoms live on a disk "
            f"centred on a pixel), got kernel_size={kernel_size}"
        )
    if not isinstance(atoms, int) or isinstance(atoms, bool) or atoms < 1:
        raise ValueError(f"atoms must be an integer >= 1 (Fourier-Bessel atoms K), got {atoms!r}")
    most = max_fourier_bessel_atoms(kernel_h)
    if atoms > most:
        raise ValueError(
            f"a {kernel_h}x{kernel_h} kernel has at most {most} Fourier-Bessel atoms (the lowest-frequency ones "
            f"that stay linearly independent on its grid; at most k*k - 1 as in DCFNet), got atoms={atoms}"
        )


def fourier_bessel_atoms(kernel_size: int, count: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``count`` lowest-frequency Fourier-Bessel atoms on a ``k x k`` grid: ``(count, k, k)``."""
    validate_dcf_arguments((kernel_size, kernel_size), count)
    return torch.tensor(_fourier_bessel_numpy(kernel_size, count), dtype=dtype)


class DCFConv2d(DecomposedConv2d):
    """A convolution whose kernel combines ``K`` fixed Fourier-Bessel atoms (buffer ``bases``)
    with learned per-layer ``coefficients`` ``(C_out, C_in, K)``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as ``nn.Conv2d``
            (square, odd kernel of size >= 3).
        atoms: number of Fourier-Bessel atoms ``K``, ``1 <= K <= k^2 - 1``.
        compute: ``"auto"`` (default), ``"kernel"`` or ``"factored"``, as for
            :class:`~fewshot_acdc.nn.ACDCConv2d`: the kernel is linear in the fixed atoms, so the
            layer can also run as atom responses combined by a 1x1 product of the coefficients,
            which keeps no kernel-sized tensor for MAML's second-order graph.
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
        atoms: int = 8,
        compute: str = "auto",
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation)
        validate_dcf_arguments(self.kernel_size, atoms)
        self.set_compute_path(compute)
        self.num_atoms = atoms
        self.in_per_group = in_channels  # one group (for uses_factored_path)
        self.register_buffer("bases", fourier_bessel_atoms(self.kernel_size[0], atoms))
        self.coefficients = nn.Parameter(torch.empty(out_channels, in_channels, atoms))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.coefficients, std=math.sqrt(2.0 / (self.in_channels * self.num_atoms)))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def kernel(self) -> torch.Tensor:
        """``(C_out, C_in, k, k)``: coefficients times the fixed atoms."""
        return compose_kernel(self.coefficients, self.bases.unsqueeze(0))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.uses_factored_path(features):
            atoms = self.bases.unsqueeze(0)  # one group: (1, K, k, k)
            return factored_conv2d(features, self.coefficients, atoms, self.bias, self.stride,
                                   self.explicit_padding, self.dilation)
        return composed_conv2d(features, self.coefficients, self.bases.unsqueeze(0), self.bias, self.stride,
                               self.padding, self.dilation, 1)

    def extra_repr(self) -> str:
        parts = [f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}",
                 f"stride={self.stride}", f"padding={self.padding}", f"fourier_bessel_atoms={self.num_atoms}"]
        if self.dilation != (1, 1):
            parts.append(f"dilation={self.dilation}")
        if self.bias is None:
            parts.append("bias=False")
        return ", ".join(parts)
