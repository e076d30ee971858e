"""Specification of fewshot_acdc.nn.acdc: the ACDC convolution layer on its own."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from fewshot_acdc.nn import ACDCConv2d, channel_shuffle, compose_kernel
from fewshot_acdc.nn.acdc import coefficient_product, composed_conv2d


def hand_assembled_kernel(coefficients, atoms, out_channels, in_channels, groups):
    """Kernel built entry by entry with Python loops, independent of compose_kernel's matmul."""
    _, m, kh, kw = atoms.shape
    out_per_group, in_per_group = out_channels // groups, in_channels // groups
    kernel = torch.zeros(out_channels, in_per_group, kh, kw, dtype=atoms.dtype)
    for g, o, c, j in itertools.product(range(groups), range(out_per_group), range(in_per_group), range(m)):
        kernel[g * out_per_group + o, c] += coefficients[o, c, j] * atoms[g, j]
    return kernel


@pytest.mark.parametrize(
    "in_channels,out_channels,kernel_size,stride,padding,dilation,bias,group_size",
    [
        (3, 4, 3, 1, 1, 1, False, None),
        (4, 6, (3, 5), 2, (1, 2), 1, True, None),
        (4, 4, 5, 1, 4, 2, False, None),
        (8, 8, 3, 1, 1, 1, False, 4),       # square grouped layer: 2 groups of 4 in / 4 out
        (4, 8, 3, 2, 1, 1, True, 4),        # widening grouped layer: 2 groups of 2 in / 4 out
        (2, 3, 1, 1, 0, 1, False, None),    # 1x1 kernel
    ],
)
@pytest.mark.parametrize("compute", ["kernel", "factored"])
def test_forward_equals_conv2d_with_hand_assembled_kernel(
    in_channels, out_channels, kernel_size, stride, padding, dilation, bias, group_size, compute
):
    torch.manual_seed(0)
    layer = ACDCConv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias,
                       atoms=3, group_size=group_size, shuffle=False, compute=compute).double()
    if bias:
        torch.nn.init.normal_(layer.bias)
    images = torch.randn(2, in_channels, 11, 13, dtype=torch.float64)
    kernel = hand_assembled_kernel(layer.coefficients, layer.atoms, out_channels, in_channels, layer.groups)
    expected = F.conv2d(images, kernel, layer.bias, stride, padding, dilation, layer.groups)
    torch.testing.assert_close(layer.kernel(), kernel)
    torch.testing.assert_close(layer(images), expected)


def test_grouped_output_is_channel_shuffled():
    torch.manual_seed(0)
    layer = ACDCConv2d(8, 8, 3, padding=1, atoms=2, group_size=4)
    images = torch.randn(1, 8, 5, 5)
    unshuffled = F.conv2d(images, layer.kernel(), None, 1, 1, 1, layer.groups)
    # Two groups of four channels: shuffled order interleaves them 0,4,1,5,2,6,3,7.
    torch.testing.assert_close(layer(images), unshuffled[:, [0, 4, 1, 5, 2, 6, 3, 7]])
    torch.testing.assert_close(channel_shuffle(unshuffled, 2), unshuffled[:, [0, 4, 1, 5, 2, 6, 3, 7]])


def test_coefficients_are_shared_across_groups_and_atoms_are_not():
    layer = ACDCConv2d(8, 8, 3, atoms=4, group_size=2)
    assert layer.groups == 4
    assert tuple(layer.coefficients.shape) == (2, 2, 4)
    assert tuple(layer.atoms.shape) == (4, 4, 3, 3)


@pytest.mark.parametrize("kernel_size", [3, (3, 5)])
def test_with_k_squared_atoms_any_kernel_is_representable_exactly(kernel_size):
    torch.manual_seed(0)
    layer = ACDCConv2d(3, 5, kernel_size, atoms=math.prod((kernel_size,) * 2 if isinstance(kernel_size, int) else kernel_size)).double()
    target = torch.randn(5, 3, *layer.kernel_size, dtype=torch.float64)
    # With m = kh*kw atoms forming the standard basis, the coefficients are the kernel itself.
    with torch.no_grad():
        layer.atoms.copy_(torch.eye(layer.num_atoms, dtype=torch.float64).view(1, layer.num_atoms, *layer.kernel_size))
        layer.coefficients.copy_(target.flatten(2))
    torch.testing.assert_close(layer.kernel(), target)


def test_with_k_squared_atoms_gradient_descent_learns_an_arbitrary_conv():
    torch.manual_seed(0)
    target = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False).double()
    layer = ACDCConv2d(4, 6, 3, padding=1, atoms=9).double()
    images = torch.randn(16, 4, 8, 8, dtype=torch.float64)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.02)
    for _ in range(1500):
        optimizer.zero_grad()
        loss = F.mse_loss(layer(images), target(images).detach())
        loss.backward()
        optimizer.step()
    relative_error = (layer.kernel() - target.weight).norm() / target.weight.norm()
    assert relative_error < 1e-3


def test_fewer_atoms_than_k_squared_cannot_represent_a_generic_kernel():
    # The other side of the previous test: rank m < k*k limits the kernel's spatial span.
    torch.manual_seed(0)
    layer = ACDCConv2d(4, 6, 3, atoms=2)
    kernel = layer.kernel().detach().reshape(-1, 9)
    assert torch.linalg.matrix_rank(kernel) == 2


@pytest.mark.parametrize("in_channels,out_channels,group_size", [(64, 64, None), (32, 128, None), (64, 64, 16)])
def test_initial_output_variance_matches_kaiming_conv(in_channels, out_channels, group_size):
    torch.manual_seed(0)
    images = torch.randn(8, in_channels, 12, 12)
    acdc_variances, kaiming_variances = [], []
    for _ in range(30):
        layer = ACDCConv2d(in_channels, out_channels, 3, padding=1, atoms=8, group_size=group_size)
        reference = torch.nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False, groups=layer.groups)
        torch.nn.init.kaiming_normal_(reference.weight, mode="fan_in", nonlinearity="relu")
        with torch.no_grad():
            acdc_variances.append(layer(images).var().item())
            kaiming_variances.append(reference(images).var().item())
    ratio = sum(acdc_variances) / sum(kaiming_variances)
    # Both have expected output variance 2 * Var(input); 30 draws keep the ratio within ~10%.
    assert 0.85 < ratio < 1.15, ratio
    assert abs(sum(kaiming_variances) / len(kaiming_variances) - 2.0) < 0.3


def test_atom_drop_drops_and_rescales_in_training_only():
    torch.manual_seed(0)
    layer = ACDCConv2d(4, 4, 3, atoms=200, atom_drop=0.25)
    dropped = layer.effective_atoms()
    kept = (dropped != 0).all(dim=(2, 3))
    assert 0.65 < kept.float().mean() < 0.85
    torch.testing.assert_close(dropped[kept], (layer.atoms / 0.75)[kept])
    layer.eval()
    assert torch.equal(layer.effective_atoms(), layer.atoms)
    torch.testing.assert_close(layer(torch.ones(1, 4, 5, 5)), F.conv2d(torch.ones(1, 4, 5, 5), layer.kernel()))


def test_atom_drop_is_reproducible_from_a_seed_and_keeps_the_expected_kernel():
    layer = ACDCConv2d(4, 4, 3, atoms=8, atom_drop=0.1)
    torch.manual_seed(123)
    first = layer.kernel()
    torch.manual_seed(123)
    assert torch.equal(first, layer.kernel())
    generator = torch.Generator().manual_seed(7)
    seeded = ACDCConv2d(4, 4, 3, atoms=8, atom_drop=0.1, generator=generator)
    torch.manual_seed(0)
    mean_kernel = torch.stack([seeded.kernel().detach() for _ in range(4000)]).mean(0)
    # Inverted dropout: the expected kernel equals the kernel without dropping.
    seeded.eval()
    torch.testing.assert_close(mean_kernel, seeded.kernel().detach(), atol=0.02, rtol=0.05)


def test_gradients_reach_atoms_coefficients_and_bias():
    layer = ACDCConv2d(3, 4, 3, bias=True, atoms=4, group_size=None)
    layer(torch.randn(2, 3, 6, 6)).square().sum().backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(atoms=0), "atoms must be an integer >= 1"),
        (dict(atoms=2.5), "atoms must be an integer >= 1"),
        (dict(atom_drop=1.0), r"atom_drop must be a probability in \[0, 1\)"),
        (dict(atom_drop=-0.1), "atom_drop must be a probability"),
        (dict(group_size=3), "group_size=3 does not divide the channels of a 8->8 layer"),
        (dict(group_size=0), "group_size must be a positive integer"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ACDCConv2d(8, 8, 3, **kwargs)


def test_bad_group_size_error_lists_accepted_sizes():
    with pytest.raises(ValueError, match=r"accepted group sizes for this layer: \[1, 2, 4, 8\]"):
        ACDCConv2d(8, 8, 3, group_size=3)


def test_compose_kernel_shapes():
    kernel = compose_kernel(torch.randn(4, 2, 3), torch.randn(5, 3, 3, 3))
    assert kernel.shape == (20, 2, 3, 3)


# ----------------------------------------------------------------------------- compute paths
LAYER_SHAPES = [  # in, out, kernel, stride, padding, dilation, bias, group_size
    (4, 6, 3, 1, 1, 1, True, None),
    (4, 6, (3, 5), 2, (1, 2), 1, False, None),
    (8, 8, 3, 1, "same", 2, False, 4),
    (4, 8, 3, 2, 1, 1, True, 4),
    (6, 4, 3, 1, "valid", 1, False, None),
]


def _layer_pair(shape, atoms=3):
    """The same layer (same tensors) evaluated with the kernel path and with the factored path."""
    in_channels, out_channels, kernel_size, stride, padding, dilation, bias, group_size = shape
    layer = ACDCConv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias,
                       atoms=atoms, group_size=group_size).double()
    if bias:
        torch.nn.init.normal_(layer.bias)
    return layer


@pytest.mark.parametrize("shape", LAYER_SHAPES)
def test_factored_path_has_the_same_gradients_to_second_order_as_the_kernel_path(shape):
    """What second-order MAML differentiates: d/dtheta of a function of the inner gradient."""
    torch.manual_seed(1)
    layer = _layer_pair(shape)
    images = torch.randn(3, shape[0], 9, 10, dtype=torch.float64)
    params = [p for p in layer.parameters()]
    results = {}
    for compute in ("kernel", "factored"):
        layer.compute = compute
        output = layer(images)
        inner = torch.autograd.grad(output.square().sum(), params, create_graph=True)
        outer = torch.autograd.grad(sum((g * g).sum() for g in inner) + output.sum(), params)
        results[compute] = (output.detach(), [g.detach() for g in inner], outer)
    for kernel_value, factored_value in zip(results["kernel"], results["factored"]):
        torch.testing.assert_close(factored_value, kernel_value)


def test_factored_path_passes_gradgradcheck():
    torch.manual_seed(2)
    layer = _layer_pair((4, 4, 3, 2, 1, 1, True, 2), atoms=2)
    layer.compute = "factored"
    images = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True)

    def function(features, coefficients, atoms, bias):
        return torch.func.functional_call(layer, {"coefficients": coefficients, "atoms": atoms, "bias": bias},
                                          (features,))

    inputs = (images, layer.coefficients.detach().requires_grad_(), layer.atoms.detach().requires_grad_(),
              layer.bias.detach().requires_grad_())
    assert torch.autograd.gradcheck(function, inputs)
    assert torch.autograd.gradgradcheck(function, inputs)


def test_auto_path_factors_when_the_atom_responses_are_smaller_than_the_kernel():
    layer = ACDCConv2d(256, 256, 3, padding=1, atoms=8)
    # 5 support images of 6x6 (a deep ResNet stage under MAML): responses 5*256*(9+8)*36 < 2*256*256*9.
    assert layer.uses_factored_path(torch.zeros(5, 256, 6, 6))
    # 75 query images of 21x21: the kernel is far smaller.
    assert not layer.uses_factored_path(torch.zeros(75, 256, 21, 21))
    layer.compute = "kernel"
    assert not layer.uses_factored_path(torch.zeros(5, 256, 6, 6))
    layer.compute = "factored"
    assert layer.uses_factored_path(torch.zeros(75, 256, 21, 21))


def test_auto_path_output_does_not_depend_on_the_path_chosen():
    torch.manual_seed(3)
    layer = ACDCConv2d(32, 32, 3, padding=1, atoms=4).double()
    small, large = torch.randn(1, 32, 3, 3, dtype=torch.float64), torch.randn(16, 32, 12, 12, dtype=torch.float64)
    assert layer.uses_factored_path(small) and not layer.uses_factored_path(large)
    for images in (small, large):
        expected = F.conv2d(images, layer.kernel(), None, 1, 1)
        torch.testing.assert_close(layer(images), expected)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
def test_compute_path_errors_name_the_problem():
    with pytest.raises(ValueError, match="compute must be one of auto, kernel, factored"):
        ACDCConv2d(4, 4, 3, compute="fast")
    with pytest.raises(ValueError, match="symmetric padding"):
        ACDCConv2d(4, 4, 2, padding="same", compute="factored")
    # 'auto' with an even 'same' kernel silently keeps the kernel path, which handles it.
    layer = ACDCConv2d(4, 4, 2, padding="same")
    assert not layer.uses_factored_path(torch.zeros(1, 4, 5, 5))
    assert layer(torch.zeros(1, 4, 5, 5)).shape == (1, 4, 5, 5)


COMPOSED_GEOMETRIES = [  # stride, padding, dilation, groups
    ((1, 1), (1, 1), (1, 1), 1),
    ((2, 1), (0, 2), (1, 2), 1),
    ((1, 1), (1, 1), (1, 1), 2),
    ((1, 1), "same", (1, 1), 1),  # string padding: the plain expression
]


def _plain_composed_conv2d(features, coefficients, atoms, bias, stride, padding, dilation, groups):
    """The definition: autograd through the composed kernel, nothing recomputed."""
    return F.conv2d(features, compose_kernel(coefficients, atoms), bias, stride, padding, dilation, groups)


@pytest.mark.parametrize("geometry", COMPOSED_GEOMETRIES)
@pytest.mark.parametrize("differentiated", ["all", "atoms", "coefficients", "features"])
def test_composed_conv2d_equals_autograd_through_the_kernel_to_second_order(geometry, differentiated):
    """The kernel path recomputes the kernel in backward instead of keeping it; inner gradients
    (create_graph) and the gradient of a function of them must not change."""
    stride, padding, dilation, groups = geometry
    torch.manual_seed(4)
    tensors = {"features": torch.randn(3, 4 * groups, 9, 8, dtype=torch.float64),
               "coefficients": torch.randn(5, 4, 3, dtype=torch.float64),
               "atoms": torch.randn(groups, 3, 3, 3, dtype=torch.float64),
               "bias": torch.randn(5 * groups, dtype=torch.float64)}
    names = ["features", "coefficients", "atoms"] if differentiated == "all" else [differentiated]
    results = []
    for function in (composed_conv2d, _plain_composed_conv2d):
        inputs = {name: value.clone().requires_grad_(name in names) for name, value in tensors.items()}
        output = function(inputs["features"], inputs["coefficients"], inputs["atoms"], inputs["bias"],
                          stride, padding, dilation, groups)
        targets = [inputs[name] for name in names]
        inner = torch.autograd.grad(output.square().sum(), targets, create_graph=True)
        outer = torch.autograd.grad(sum((g.sin() * g).sum() for g in inner) + output.sum(), targets)
        results.append((output.detach(), [g.detach() for g in inner], outer))
    for recomputed, plain in zip(*results):
        torch.testing.assert_close(recomputed, plain)


def test_composed_conv2d_passes_gradgradcheck():
    torch.manual_seed(5)
    inputs = (torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True),
              torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True),
              torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True))

    def function(features, coefficients, atoms):
        return composed_conv2d(features, coefficients, atoms, None, (2, 2), (1, 1), (1, 1), 2)

    assert torch.autograd.gradcheck(function, inputs)
    assert torch.autograd.gradgradcheck(function, inputs)


def test_composed_conv2d_keeps_its_inputs_for_backward_not_the_kernel():
    """What makes the kernel path as lean as a standard conv in a pass that is differentiated once
    (MAML's query pass, first order): the graph holds the inputs, whose storage exists anyway."""
    features = torch.randn(2, 8, 6, 6, requires_grad=True)
    coefficients = torch.randn(16, 8, 4, requires_grad=True)
    atoms = torch.randn(1, 4, 3, 3, requires_grad=True)
    output = composed_conv2d(features, coefficients, atoms, None, (1, 1), (1, 1), (1, 1), 1)
    saved = {t.untyped_storage().data_ptr() for t in output.grad_fn.saved_tensors}
    assert saved == {t.untyped_storage().data_ptr() for t in (features, coefficients, atoms)}
    plain = _plain_composed_conv2d(features, coefficients, atoms, None, (1, 1), (1, 1), (1, 1), 1)
    assert plain.grad_fn._saved_weight.shape == (16, 8, 3, 3)  # what autograd alone would keep


def test_composed_conv2d_under_vmap_is_the_plain_expression():
    """torch.func transforms (the engine's vmap task batching) get the plain composition."""
    torch.manual_seed(6)
    features = torch.randn(3, 2, 4, 5, 5, dtype=torch.float64)
    coefficients = torch.randn(3, 4, 2, dtype=torch.float64)
    atoms = torch.randn(1, 2, 3, 3, dtype=torch.float64)

    def loss(coefficient_tensor, images):
        return composed_conv2d(images, coefficient_tensor, atoms, None, (1, 1), (1, 1), (1, 1), 1).square().sum()

    batched = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(coefficients, features)
    for index in range(3):
        expected = torch.func.grad(loss)(coefficients, features[index])
        torch.testing.assert_close(batched[index], expected)


def test_composed_conv2d_under_autocast_is_the_plain_expression():
    """Its backward would see autocast's bfloat16 next to float32 saved inputs; under autocast the
    layer takes the plain composition, which autocast handles."""
    torch.manual_seed(7)
    layer = ACDCConv2d(8, 8, 3, padding=1, atoms=4, compute="kernel")
    images = torch.randn(2, 8, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = layer(images)
    assert output.dtype == torch.bfloat16
    output.float().sum().backward()
    assert layer.atoms.grad.dtype == torch.float32 and layer.coefficients.grad is not None
    torch.testing.assert_close(output.float(), layer(images), rtol=0.05, atol=0.05)


def test_coefficient_product_equals_a_matrix_product_at_every_order():
    torch.manual_seed(8)
    inputs = (torch.randn(5, 6, dtype=torch.float64, requires_grad=True),
              torch.randn(6, 4, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(coefficient_product, inputs)
    assert torch.autograd.gradgradcheck(coefficient_product, inputs)
    torch.testing.assert_close(coefficient_product(*inputs), inputs[0] @ inputs[1])


def test_coefficient_product_hands_a_sliced_coefficient_tensor_contiguous_gradients_in_a_double_backward():
    """The reason it exists. A layer's coefficients are a column slice of the shared tensor (a
    strided matrix); through a plain matrix product (torch 2.14), the second-order pass gives that
    slice a transposed gradient, and adding transposed coefficient-sized matrices is slow."""
    shared = torch.randn(16, 48, requires_grad=True)
    responses = torch.randn(24, 10, requires_grad=True)
    coefficients = shared[:, :24]
    output = coefficient_product(coefficients, responses)
    (grad_responses,) = torch.autograd.grad(output.square().sum(), responses, create_graph=True)
    captured = []
    coefficients.register_hook(lambda grad: captured.append(grad))
    (grad_responses * torch.randn(24, 10)).sum().backward()
    assert len(captured) == 1 and captured[0].is_contiguous()


@pytest.mark.parametrize("compute", ["factored", "kernel"])
@pytest.mark.parametrize("create_graph", [False, True])
def test_a_backward_for_the_atoms_alone_skips_the_coefficient_gradient(compute, create_graph):
    """MAML's inner loop with scope ``atoms`` asks autograd for the atoms only; the layer's custom
    backward must then not compute the coefficients' gradient (the engine would drop it). Counted
    exactly: the backward for the atoms alone costs the backward for both minus the one product
    that forms the coefficients' gradient (factored path: gradient of the output times the atom
    responses, ``2 * C_out * (C_in * m) * B * H * W`` flops; composed path: kernel gradient times
    the atoms, ``2 * C_out * C_in * k * k * m``), and the atoms' gradient is unchanged."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(9)
    in_channels, out_channels, atoms, batch, size = 6, 10, 4, 3, 7
    layer = ACDCConv2d(in_channels, out_channels, 3, padding=1, atoms=atoms, compute=compute)
    images = torch.randn(batch, in_channels, size, size, requires_grad=True)

    def backward_flops(wanted):
        loss = layer(images).square().sum()
        with FlopCounterMode(display=False) as counter:
            grads = torch.autograd.grad(loss, wanted, create_graph=create_graph)
        return counter.get_total_flops(), grads[0]

    both_flops, atoms_grad_with_coefficients = backward_flops([layer.atoms, layer.coefficients, images])
    atoms_flops, atoms_grad = backward_flops([layer.atoms, images])
    if compute == "factored":
        coefficient_gradient_flops = 2 * out_channels * in_channels * atoms * batch * size * size
    else:
        coefficient_gradient_flops = 2 * out_channels * in_channels * 9 * atoms
    assert both_flops - atoms_flops == coefficient_gradient_flops
    torch.testing.assert_close(atoms_grad, atoms_grad_with_coefficients)
