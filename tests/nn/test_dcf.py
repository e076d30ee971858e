"""Specification of fewshot_acdc.nn.dcf: fixed Fourier-Bessel atoms and the DCF convolution."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from scipy import special
from torch import nn

from fewshot_acdc.models import create_backbone
from fewshot_acdc.nn import DCFConv2d, fourier_bessel_atoms
from fewshot_acdc.nn.dcf import fourier_bessel_frequencies, max_fourier_bessel_atoms

# The lowest Dirichlet eigenvalues of the unit disk, as (n, q): zeros j_{0,1} = 2.405 < j_{1,1} = 3.832
# < j_{2,1} = 5.136 < j_{0,2} = 5.520 < j_{3,1} = 6.380 < j_{1,2} = 7.016 (Abramowitz & Stegun 9.5).
LOWEST = [(0, 1, 2.404826), (1, 1, 3.831706), (2, 1, 5.135622), (0, 2, 5.520078), (3, 1, 6.380162), (1, 2, 7.015587)]


def reference_atom(kernel_size, n, zero, part):
    """One atom pixel by pixel from the DCFNet definition (before the common normalization)."""
    half = (kernel_size - 1) // 2
    atom = torch.zeros(kernel_size, kernel_size, dtype=torch.float64)
    for i, j in itertools.product(range(kernel_size), range(kernel_size)):
        x, y = (j - half) / (half + 0.5), (i - half) / (half + 0.5)
        r, theta = math.hypot(x, y), math.atan2(y, x)
        if r >= 1:
            continue
        radial = special.jv(n, zero * r) / abs(special.jv(n + 1, zero))
        angular = {"radial": 1.0, "cos": math.sqrt(2) * math.cos(n * theta), "sin": math.sqrt(2) * math.sin(n * theta)}
        atom[i, j] = radial * angular[part]
    return atom


def test_frequencies_are_the_lowest_bessel_zeros_in_order_with_cos_sin_pairs():
    atoms = fourier_bessel_frequencies(10)
    expanded = [(n, q) for n, q, _ in LOWEST for _ in range(1 if n == 0 else 2)]
    assert [(n, q) for n, q, _, _ in atoms] == expanded
    assert [part for _, _, _, part in atoms] == ["radial", "cos", "sin", "cos", "sin", "radial", "cos", "sin", "cos", "sin"]
    for (_, _, zero, _), (_, _, expected) in zip(atoms, [a for a in LOWEST for _ in range(1 if a[0] == 0 else 2)]):
        assert zero == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("kernel_size,count", [(3, 8), (5, 20), (7, 12)])
def test_atoms_equal_the_pixelwise_definition_up_to_one_common_scale(kernel_size, count):
    atoms = fourier_bessel_atoms(kernel_size, count, dtype=torch.float64)
    reference = torch.stack([reference_atom(kernel_size, n, zero, part)
                             for n, _, zero, part in fourier_bessel_frequencies(count)])
    scale = math.sqrt(reference.square().sum(dim=(1, 2)).mean())
    torch.testing.assert_close(atoms, reference / scale)
    # Normalized: mean squared norm 1; linearly independent.
    assert atoms.square().sum(dim=(1, 2)).mean().item() == pytest.approx(1.0)
    assert torch.linalg.matrix_rank(atoms.reshape(count, -1)) == count


def test_atom_symmetries():
    atoms = fourier_bessel_atoms(5, 10, dtype=torch.float64)
    radial = atoms[0]
    for transformed in (torch.rot90(radial, 1), radial.flip(0), radial.flip(1), radial.T):
        torch.testing.assert_close(transformed, radial)
    assert (radial > 0).sum() > 0 and radial[2, 2] == radial.max()  # J_0 peaks at the centre
    cos1, sin1 = atoms[1], atoms[2]
    # A quarter turn maps cos(theta) to +-sin(theta); n = 2 atoms are invariant under a half turn.
    rotated = torch.rot90(cos1, 1)
    assert torch.allclose(rotated, sin1, atol=1e-12) or torch.allclose(rotated, -sin1, atol=1e-12)
    torch.testing.assert_close(torch.rot90(atoms[3], 2), atoms[3])


def test_limits_of_atoms_per_kernel():
    assert [max_fourier_bessel_atoms(k) for k in (3, 5, 7)] == [8, 20, 31]


@pytest.mark.parametrize("in_channels,out_channels,kernel_size,stride,padding,bias,atoms",
                         [(3, 4, 3, 1, 1, False, 5), (4, 6, 5, 2, 2, True, 12), (2, 3, 3, 1, 0, False, 8)])
@pytest.mark.parametrize("compute", ["kernel", "factored"])
def test_forward_equals_conv2d_with_the_hand_assembled_kernel(in_channels, out_channels, kernel_size, stride,
                                                              padding, bias, atoms, compute):
    torch.manual_seed(0)
    layer = DCFConv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias, atoms=atoms,
                      compute=compute).double()
    if bias:
        nn.init.normal_(layer.bias)
    kernel = torch.zeros(out_channels, in_channels, kernel_size, kernel_size, dtype=torch.float64)
    for o, c, j in itertools.product(range(out_channels), range(in_channels), range(atoms)):
        kernel[o, c] += layer.coefficients[o, c, j] * layer.bases[j]
    images = torch.randn(2, in_channels, 9, 10, dtype=torch.float64)
    torch.testing.assert_close(layer.kernel(), kernel)
    torch.testing.assert_close(layer(images), F.conv2d(images, kernel, layer.bias, stride, padding))


def test_factored_path_has_the_same_second_order_gradients_and_never_touches_the_fixed_atoms():
    torch.manual_seed(1)
    layer = DCFConv2d(4, 6, 3, 1, 1, bias=True, atoms=6).double()
    nn.init.normal_(layer.bias)
    images = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    results = {}
    for compute in ("kernel", "factored"):
        layer.compute = compute
        output = layer(images)
        params = [layer.coefficients, layer.bias]
        inner = torch.autograd.grad(output.square().sum(), params, create_graph=True)
        outer = torch.autograd.grad(sum((g * g).sum() for g in inner), params)
        results[compute] = (output.detach(), *[g.detach() for g in inner], *outer)
    for expected, actual in zip(results["kernel"], results["factored"]):
        torch.testing.assert_close(actual, expected)
    assert not layer.bases.requires_grad
    # A deep layer on a small support batch takes the factored path by itself.
    deep = DCFConv2d(256, 256, 3, padding=1, atoms=8)
    assert deep.uses_factored_path(torch.zeros(5, 256, 6, 6))
    assert not deep.uses_factored_path(torch.zeros(75, 256, 21, 21))


def test_atoms_are_fixed_buffers_and_gradients_reach_only_coefficients_and_bias():
    torch.manual_seed(0)
    layer = DCFConv2d(3, 4, 3, padding=1, bias=True, atoms=6)
    assert [name for name, _ in layer.named_parameters()] == ["coefficients", "bias"]
    assert [name for name, _ in layer.named_buffers()] == ["bases"] and "bases" in layer.state_dict()
    layer(torch.randn(2, 3, 6, 6)).square().sum().backward()
    assert layer.coefficients.grad.abs().sum() > 0 and layer.bias.grad.abs().sum() > 0
    assert layer.bases.grad is None and not layer.bases.requires_grad
    torch.testing.assert_close(layer.bases, fourier_bessel_atoms(3, 6))


def test_every_layer_owns_its_coefficients_and_the_counts_follow():
    model = create_backbone("resnet10", "dcf", bessel_atoms=6)
    layers = [m for m in model.modules() if isinstance(m, DCFConv2d)]
    assert len(layers) == 8 and len({id(layer.coefficients) for layer in layers}) == 8
    assert dict(model.coefficient_bank.named_parameters()) == {}
    # 3x3 convs of ResNet10: 64->64, 64->64 | 64->128, 128->128 | 128->256, 256->256 | 256->512, 512->512
    pairs = [(64, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
    assert sum(layer.coefficients.numel() for layer in layers) == 6 * sum(a * b for a, b in pairs)
    assert sum(layer.bases.numel() for layer in layers) == 8 * 6 * 9


def test_initial_output_variance_matches_kaiming_conv():
    torch.manual_seed(0)
    images = torch.randn(8, 64, 10, 10)
    ours, reference = [], []
    for _ in range(20):
        layer = DCFConv2d(64, 64, 3, padding=1, atoms=8)
        conv = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
        with torch.no_grad():
            ours.append(layer(images).var().item())
            reference.append(conv(images).var().item())
    # Kernel entries have the Kaiming variance on average over positions; the low-frequency
    # atoms put more of it in the centre, so the output variance differs by a few percent.
    assert 0.75 < sum(ours) / sum(reference) < 1.25


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(kernel_size=2), "square kernel of odd size >= 3"),
        (dict(kernel_size=1), "square kernel of odd size >= 3"),
        (dict(kernel_size=(3, 5)), "square kernel of odd size >= 3"),
        (dict(atoms=0), "atoms must be an integer >= 1"),
        (dict(atoms=9), "a 3x3 kernel has at most 8 Fourier-Bessel atoms"),
        (dict(kernel_size=5, atoms=21), "a 5x5 kernel has at most 20"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(kwargs, message):
    arguments = {"kernel_size": 3, "atoms": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        DCFConv2d(4, 4, arguments.pop("kernel_size"), **arguments)


def test_too_many_atoms_fail_at_model_construction_naming_the_layer():
    with pytest.raises(ValueError, match=r"dcf layer 64->64 in 'conv2': a 3x3 kernel has at most 8"):
        create_backbone("conv4", "dcf", bessel_atoms=9)
