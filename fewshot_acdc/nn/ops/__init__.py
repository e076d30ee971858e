"""Kernels of the decomposed convolutions: the tensor functions the layers in :mod:`fewshot_acdc.nn` call.

Layout of ``fewshot_acdc/nn``:

* **Layers** (``nn.Module`` s, what backbones hold): :mod:`..acdc` (ACDC), :mod:`..dcf`,
  :mod:`..basis`, :mod:`..repetition`, all subclasses of
  :class:`~fewshot_acdc.nn.decomposed.DecomposedConv2d` (:mod:`..decomposed`: the geometry, the
  compute path and its per-call choice, owned-or-shared registration of a shared tensor);
  :mod:`..factory` builds them for a :class:`~fewshot_acdc.nn.ConvSpec`, :mod:`..sharing` cuts
  the shared coefficient slices once per forward, :mod:`..conversion` turns a trained
  standard-conv backbone into BasisConv (model surgery, not a layer).
* **Ops** (this package; functions of tensors, no modules, no parameters):

  - :mod:`.kernel`: the *kernel path*. :func:`compose_kernel` builds
    ``W[g*O + o, c] = sum_j A[o, c, j] D[g, j]``; :func:`composed_conv2d` convolves with it through
    :class:`~.kernel._ComposedKernelConv2d`, which keeps ``x, A, D`` for backward instead of the kernel.
  - :mod:`.factored`: the *factored path*. :func:`factored_conv2d` never builds the kernel (atom
    responses of the unfolded input, then one product with the coefficients,
    :func:`coefficient_product` / :class:`~.factored._CoefficientProduct`, whose double backward
    hands the shared coefficients a contiguous gradient).
  - :mod:`.paths`: the per-call choice between them (:func:`factored_is_smaller`,
    ``compute="auto"``), padding and output-size arithmetic.
  - :mod:`.autograd`: when the custom ``autograd.Function`` s may run
    (:func:`custom_autograd_applies`: not under torch.func transforms nor autocast, where the plain
    expressions they equal are used) and which gradients a backward must compute
    (:func:`gradients_to_compute`, :func:`with_grad_fn`).
  - :mod:`._torch_private`: the one shim around private torch calls (``torch._C``): whether a
    torch.func transform is active, whether the engine will run a node. Nothing else in the
    package touches ``torch._C``.

Every custom Function's backward is written with differentiable ops, so each path computes the
same function as the plain ``F.conv2d(x, compose_kernel(A, D))`` to every order (the agreement
and second-order tests in ``tests/nn`` and ``tests/meta`` compare them); the paths differ only in
what they keep between forward and backward, which is what makes them faster (docs/performance.md).
"""
from .autograd import custom_autograd_applies, gradients_to_compute, with_grad_fn
from .factored import coefficient_product, factored_conv2d
from .kernel import compose_kernel, composed_conv2d
from .paths import COMPUTE_PATHS, conv_output_size, explicit_padding, factored_is_smaller

__all__ = [
    "compose_kernel", "composed_conv2d", "coefficient_product", "factored_conv2d",
    "COMPUTE_PATHS", "conv_output_size", "explicit_padding", "factored_is_smaller",
    "custom_autograd_applies", "gradients_to_compute", "with_grad_fn",
]
