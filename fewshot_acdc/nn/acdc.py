"""Atom-coefficient decomposed convolution (ACDC).

A convolution kernel ``W`` of shape ``(C_out, C_in / G, kh, kw)`` is rebuilt at every forward
from ``m`` spatial dictionary atoms and a coefficient tensor::

    W[g * O + o, c] = sum_j  A[o, c, j] * D[g, j]        (O = C_out / G output channels per group)

* ``A`` (``coefficients``): ``(O, s, m)`` with ``s = C_in / G`` input channels per group. It is
  either owned by the layer (sharing scope ``layer``) or a *leading slice* of a larger tensor
  shared with other layers (scopes ``net`` and ``block``, see :mod:`fewshot_acdc.nn.factory`).
* ``D`` (``atoms``): ``(G, m, kh, kw)``, one dictionary of ``m`` atoms per input-channel group;
  without grouping ``G == 1``. Atoms are always owned by the layer.

With grouping (``group_size=s``) the convolution is a grouped convolution whose groups all use
the same coefficients but their own atoms; a channel shuffle on the output lets the next layer's
groups see every group's features (ACDC paper, section 2.4). The number of groups is
``G = max(C_in, C_out) / s`` (at least 1), so a group has at most ``s`` input and ``s`` output
channels and every grouped layer's coefficients fit in one ``(s, s, m)`` tensor: a square layer
has ``s`` in and ``s`` out per group, a widening layer (64 -> 128) ``s/2`` in and ``s`` out and
uses the leading slice. This is the reading under which the paper's grouped parameter counts
(Table 1, e.g. ResNet18 ACDC-g-net 0.20M / 0.26M) follow; see tests/test_params.py.

Shared coefficients are registered in every layer that uses them as the *same* ``Parameter``
object (tied weights). ``Module.named_parameters()`` therefore lists a shared tensor once, under
the name of the module that registered it first (the network's ``coefficient_bank``), and
``torch.func.functional_call`` replaces every tied occurrence when given that one name. This is
also what learn2learn's ``clone_module`` and higher's ``monkeypatch`` expect of tied weights.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

IntPair = Union[int, Tuple[int, int]]

COMPUTE_PATHS: Tuple[str, ...] = ("auto", "kernel", "factored")


def _pair(value: IntPair, name: str) -> Tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


def set_conv_geometry(module: nn.Module, in_channels: int, out_channels: int, kernel_size: IntPair,
                      stride: IntPair, padding: Union[IntPair, str], dilation: IntPair) -> None:
    """Check the channel counts and store the geometry as ``nn.Conv2d`` does (pairs; padding may
    stay ``"same"``/``"valid"``): the part every decomposed conv layer shares."""
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    module.in_channels = in_channels
    module.out_channels = out_channels
    module.kernel_size = _pair(kernel_size, "kernel_size")
    module.stride = _pair(stride, "stride")
    module.padding = padding if isinstance(padding, str) else _pair(padding, "padding")
    module.dilation = _pair(dilation, "dilation")


def set_compute_path(module: nn.Module, compute: str) -> None:
    """Store ``compute`` and the numeric padding the factored path needs (after
    :func:`set_conv_geometry`); refuse a path the layer cannot take."""
    if compute not in COMPUTE_PATHS:
        raise ValueError(f"compute must be one of {', '.join(COMPUTE_PATHS)}, got {compute!r}")
    module.compute = compute
    module.explicit_padding = explicit_padding(module.padding, module.kernel_size, module.dilation)
    if compute == "factored" and module.explicit_padding is None:
        raise ValueError(f"compute='factored' needs symmetric padding; padding={module.padding!r} with kernel "
                         f"{module.kernel_size} and dilation {module.dilation} pads one side more")


def channel_shuffle(features: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: interleave the channels of ``groups`` contiguous groups."""
    if groups == 1:
        return features
    batch, channels, height, width = features.shape
    return (
        features.view(batch, groups, channels // groups, height, width)
        .transpose(1, 2)
        .reshape(batch, channels, height, width)
    )


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


def custom_autograd_applies(features: torch.Tensor) -> bool:
    """Whether this module's custom ``autograd.Function`` s may run: not under torch.func
    transforms (``vmap``, ``grad``; they have no batching rules) nor autocast (their backward
    would mix autocast's dtypes). Otherwise the layers use the plain expressions they equal."""
    return not (torch._C._are_functorch_transforms_active() or torch.is_autocast_enabled(features.device.type))


def gradients_to_compute(ctx) -> Tuple[bool, ...]:
    """Which inputs of a custom ``autograd.Function`` its ``backward`` has to differentiate now.

    ``ctx.needs_input_grad`` only says which inputs required grad in the forward. When a backward
    asks for some tensors only (``autograd.grad(loss, atoms)``: MAML's inner loop with scope
    ``atoms``), the engine skips the branches that lead elsewhere, built-in ops skip computing
    their gradients, and so should these functions: otherwise the factored path computes every
    shared coefficient's gradient (as large a product as its forward) only for it to be dropped.
    The engine can say so for inputs that have a ``grad_fn`` (:func:`with_grad_fn` gives leaves
    one); otherwise, and outside a backward, ``needs_input_grad`` stands.
    """
    # The engine's answer is what torch.autograd.graph.register_multi_grad_hook relies on; a torch
    # without it computes every gradient that needs_input_grad names, as before.
    will_execute = getattr(torch._C, "_will_engine_execute_node", None)
    wanted = []
    for needed, (node, _) in zip(ctx.needs_input_grad, ctx.next_functions):
        if needed and node is not None and will_execute is not None:
            try:
                needed = will_execute(node)
            except RuntimeError:  # a leaf's node under autograd.grad, or not inside a backward
                pass
        wanted.append(bool(needed))
    return tuple(wanted)


def with_grad_fn(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``, or for a leaf that requires grad a view of it: the engine cannot tell a custom
    function whether a leaf's gradient is wanted (:func:`gradients_to_compute`), but it can for
    the view's node."""
    return tensor.view_as(tensor) if tensor.is_leaf and tensor.requires_grad else tensor


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
    height, width = _conv_output_size(features.shape[-2:], (kernel_h, kernel_w), stride, padding, dilation)
    output = output.reshape(batch, groups * out_per_group, height, width)
    if bias is not None:
        output = output + bias.view(1, -1, 1, 1)
    return output


def _conv_output_size(size, kernel_size, stride, padding, dilation) -> Tuple[int, int]:
    return tuple(  # type: ignore[return-value]
        (extent + 2 * pad - dil * (k - 1) - 1) // st + 1
        for extent, k, st, pad, dil in zip(size, kernel_size, stride, padding, dilation)
    )


def factored_is_smaller(compute: str, features: torch.Tensor, out_channels: int, in_per_group: int,
                        num_atoms: int, kernel_size: Tuple[int, int], stride: Tuple[int, int],
                        padding: Optional[Tuple[int, int]], dilation: Tuple[int, int]) -> bool:
    """The ``compute="auto"`` rule shared by every atoms-times-coefficients layer (ACDC, DCF).

    ``"kernel"``/``"factored"`` force a path; ``"auto"`` takes :func:`factored_conv2d` when what
    it keeps for backward (and creates again in the double backward), the unfolded input and the
    atom responses, is smaller than the kernel and the kernel's gradient. ``padding=None``
    (asymmetric ``"same"``) always composes the kernel.
    """
    if compute != "auto" or padding is None:
        return compute == "factored"
    height, width = _conv_output_size(features.shape[-2:], kernel_size, stride, padding, dilation)
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


def atom_drop_mask(
    shape: Tuple[int, ...], drop_probability: float, like: torch.Tensor,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Bernoulli keep-mask scaled by ``1 / (1 - p)`` (inverted dropout), on ``like``'s device."""
    keep = 1.0 - drop_probability
    mask = torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(keep, generator=generator)
    return mask / keep


class ACDCConv2d(nn.Module):
    """A 2D convolution whose kernel is ``m`` learned atoms combined by coefficients.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as ``nn.Conv2d``.
        atoms: number of dictionary atoms ``m`` per group (``m >= 1``).
        group_size: channels per group ``s`` (``None``: no grouping). The layer gets
            ``G = max(in_channels, out_channels) / s`` groups (1 if both are below ``s``); ``G``
            must divide both channel counts.
        atom_drop: probability ``p`` in ``[0, 1)`` of dropping each atom in training mode; the kept
            atoms are scaled by ``1 / (1 - p)``. No dropping in ``eval()`` mode. Masks come from
            ``generator`` if given, else from torch's global RNG (seed it with
            ``torch.manual_seed`` for reproducible runs).
        shuffle: apply a channel shuffle to the output when grouped (default ``True``).
        compute: how the forward is evaluated; every path computes the same function.
            ``"kernel"`` composes the full kernel (:func:`compose_kernel`) and runs one
            convolution; ``"factored"`` never builds the kernel (:func:`factored_conv2d`: depthwise
            convolution with the atoms, then a 1x1 convolution with the coefficients);
            ``"auto"`` (default) picks, per call, the path whose largest intermediate is smaller:
            the kernel ``(C_out, C_in/G, kh, kw)`` or the ``(B, C_in * m, H_out, W_out)`` atom
            responses. Under MAML's inner loop the batch is a small support set, so deep layers
            (many channels, small maps) take the factored path, which keeps neither the kernel
            nor its gradient in the second-order graph; wide query batches and shallow layers
            compose the kernel.
        shared_coefficients: a ``Parameter`` of shape ``(O', s', m)`` with ``O' >= O`` and
            ``s' >= s`` shared with other layers; this layer uses its leading ``(O, s, m)`` slice.
            ``None``: the layer owns its coefficients. ``"deferred"``: shared, attached later with
            :meth:`attach_shared_coefficients` (what :class:`ConvFactory` does once it knows the
            largest layer of each sharing scope).

    Initialization: coefficients ``~ N(0, 1/m)`` (independent of the layer, so one tensor can be
    shared by layers of any width) and atoms ``~ N(0, 2 / fan_in)`` with ``fan_in = s * kh * kw``,
    so each kernel entry has variance ``m * (1/m) * 2/fan_in = 2 / fan_in``: the Kaiming (ReLU,
    fan-in) variance of an ordinary convolution of the same shape.
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
        group_size: Optional[int] = None,
        atom_drop: float = 0.0,
        shuffle: bool = True,
        shared_coefficients: Union[nn.Parameter, str, None] = None,
        generator: Optional[torch.Generator] = None,
        compute: str = "auto",
    ) -> None:
        super().__init__()
        set_conv_geometry(self, in_channels, out_channels, kernel_size, stride, padding, dilation)
        validate_acdc_arguments(in_channels, out_channels, atoms, group_size, atom_drop)
        set_compute_path(self, compute)
        self.num_atoms = atoms
        self.group_size = group_size
        self.groups = group_count(in_channels, out_channels, group_size)
        self.in_per_group = in_channels // self.groups
        self.out_per_group = out_channels // self.groups
        self.atom_drop = atom_drop
        self.shuffle = shuffle
        self.generator = generator

        kernel_h, kernel_w = self.kernel_size
        self.atoms = nn.Parameter(torch.empty(self.groups, atoms, kernel_h, kernel_w))
        self.shares_coefficients = register_owned_or_shared(
            self, "coefficients", self.coefficient_shape, shared_coefficients, self.attach_shared_coefficients)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        # Set for the duration of a backbone's forward by nested_coefficient_slices (sharing.py).
        self.coefficient_view = None  # an nn.sharing.SharedSlice within nested_coefficient_slices
        self.reset_parameters()

    @property
    def coefficient_shape(self) -> Tuple[int, int, int]:
        """Shape ``(O, s, m)`` of the coefficients this layer uses."""
        return (self.out_per_group, self.in_per_group, self.num_atoms)

    @property
    def fan_in(self) -> int:
        return self.in_per_group * self.kernel_size[0] * self.kernel_size[1]

    def attach_shared_coefficients(self, shared: nn.Parameter) -> None:
        """Use the leading slice of ``shared`` (tied: the same Parameter object)."""
        out_needed, in_needed, atoms = self.coefficient_shape
        if shared.dim() != 3 or shared.shape[2] != atoms or shared.shape[0] < out_needed or shared.shape[1] < in_needed:
            raise ValueError(
                f"shared coefficients of shape {tuple(shared.shape)} cannot serve a layer that needs "
                f"{self.coefficient_shape} (out per group, in per group, atoms)"
            )
        self.coefficients = shared

    def reset_parameters(self) -> None:
        nn.init.normal_(self.atoms, std=math.sqrt(2.0 / self.fan_in))
        if not self.shares_coefficients:
            reset_coefficients(self.coefficients)

    def layer_coefficients(self, contiguous: bool = False) -> torch.Tensor:
        """This layer's ``(O, s, m)`` coefficients: a view of the shared tensor if shared, or a
        contiguous tensor (what composing the kernel needs) if ``contiguous``."""
        if self.coefficient_view is not None:  # set by nn.sharing.nested_coefficient_slices
            return self.coefficient_view.contiguous() if contiguous else self.coefficient_view.view
        out_needed, in_needed, _ = self.coefficient_shape
        coefficients = self.coefficients
        if coefficients is None:
            raise RuntimeError(
                "this ACDCConv2d was built with shared_coefficients='deferred' and never attached to "
                "a shared tensor; build models through ConvFactory and call its finalize()"
            )
        if coefficients.shape[0] != out_needed or coefficients.shape[1] != in_needed:
            coefficients = coefficients[:out_needed, :in_needed]
        return coefficients.contiguous() if contiguous else coefficients

    def effective_atoms(self) -> torch.Tensor:
        if self.training and self.atom_drop > 0.0:
            mask = atom_drop_mask((self.groups, self.num_atoms, 1, 1), self.atom_drop, self.atoms, self.generator)
            return self.atoms * mask
        return self.atoms

    def kernel(self) -> torch.Tensor:
        """The full convolution kernel ``(C_out, C_in / G, kh, kw)`` used by this forward."""
        return compose_kernel(self.layer_coefficients(contiguous=True), self.effective_atoms())

    def uses_factored_path(self, features: torch.Tensor) -> bool:
        """Whether :meth:`forward` on ``features`` skips building the kernel (see ``compute``)."""
        return factored_is_smaller(self.compute, features, self.out_channels, self.in_per_group, self.num_atoms,
                                   self.kernel_size, self.stride, self.explicit_padding, self.dilation)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        atoms = self.effective_atoms()
        if self.uses_factored_path(features):  # takes the strided slice as it is
            output = factored_conv2d(features, self.layer_coefficients(), atoms, self.bias, self.stride,
                                     self.explicit_padding, self.dilation)
        else:
            output = composed_conv2d(features, self.layer_coefficients(contiguous=True), atoms, self.bias,
                                     self.stride, self.padding, self.dilation, self.groups)
        if self.shuffle:
            output = channel_shuffle(output, self.groups)
        return output

    def extra_repr(self) -> str:
        parts = [
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}",
            f"stride={self.stride}", f"padding={self.padding}", f"atoms={self.num_atoms}",
        ]
        if self.dilation != (1, 1):
            parts.append(f"dilation={self.dilation}")
        if self.group_size is not None:
            parts.append(f"group_size={self.group_size}, groups={self.groups}, shuffle={self.shuffle}")
        if self.atom_drop:
            parts.append(f"atom_drop={self.atom_drop}")
        parts.append("shared_coefficients" if self.shares_coefficients else "own_coefficients")
        if self.compute != "auto":
            parts.append(f"compute={self.compute!r}")
        if self.bias is None:
            parts.append("bias=False")
        return ", ".join(parts)


def register_owned_or_shared(module: nn.Module, name: str, shape: Tuple[int, ...],
                             shared: Union[nn.Parameter, str, None], attach) -> bool:
    """Give ``module`` the parameter ``name``: owned (``shared=None``: a new uninitialized tensor
    of ``shape``), shared (a ``Parameter``, tied through ``attach``), or ``"deferred"`` (``None``
    until a factory attaches the shared tensor). Returns whether the tensor is shared."""
    if shared is None:
        module.register_parameter(name, nn.Parameter(torch.empty(shape)))
        return False
    if isinstance(shared, str):
        if shared != "deferred":
            raise ValueError(f"shared_{name} must be a Parameter, None or 'deferred', got {shared!r}")
        module.register_parameter(name, None)
        return True
    attach(shared)
    return True


def reset_coefficients(coefficients: torch.Tensor) -> None:
    """Coefficient init shared by owned and shared tensors: ``N(0, 1/m)``, ``m = shape[-1]``."""
    with torch.no_grad():
        coefficients.normal_(0.0, math.sqrt(1.0 / coefficients.shape[-1]))


def validate_acdc_arguments(
    in_channels: int, out_channels: int, atoms: int, group_size: Optional[int], atom_drop: float
) -> None:
    """Raise ``ValueError`` naming the bad value and what is accepted."""
    if not isinstance(atoms, int) or isinstance(atoms, bool) or atoms < 1:
        raise ValueError(f"atoms must be an integer >= 1, got {atoms!r}")
    if not (isinstance(atom_drop, (int, float)) and 0.0 <= atom_drop < 1.0):
        raise ValueError(f"atom_drop must be a probability in [0, 1), got {atom_drop!r}")
    if group_size is not None:
        if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
            raise ValueError(f"group_size must be a positive integer or None, got {group_size!r}")
        widest = max(in_channels, out_channels)
        groups = max(1, widest // group_size)
        if (widest >= group_size and widest % group_size) or in_channels % groups or out_channels % groups:
            accepted = [d for d in range(1, widest + 1)
                        if widest % d == 0 and in_channels % (widest // d) == 0 and out_channels % (widest // d) == 0]
            raise ValueError(
                f"group_size={group_size} does not divide the channels of a {in_channels}->{out_channels} "
                f"layer into equal groups; accepted group sizes for this layer: {accepted}"
            )


def group_count(in_channels: int, out_channels: int, group_size: Optional[int]) -> int:
    """Groups of a grouped ACDC layer: ``max(C_in, C_out) / s``, at least 1."""
    if group_size is None:
        return 1
    return max(1, max(in_channels, out_channels) // group_size)
