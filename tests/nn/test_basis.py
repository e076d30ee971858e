"""Specification of fewshot_acdc.nn.basis: BasisConv and the conversion of trained convolutions."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fewshot_acdc.models import create_backbone
from fewshot_acdc.nn import BasisConv2d, convert_to_basisconv, random_orthogonal_basis
from fewshot_acdc.nn.conversion import decomposable_convolutions


def hand_assembled_kernel(combination, basis):
    """W[o, c, y, x] = sum_j A[o, j] B[j, c, y, x], entry by entry (independent of the layer's matmul)."""
    out_channels, rank = combination.shape
    _, in_channels, kh, kw = basis.shape
    kernel = torch.zeros(out_channels, in_channels, kh, kw, dtype=basis.dtype)
    for o, j in itertools.product(range(out_channels), range(rank)):
        kernel[o] += combination[o, j] * basis[j]
    return kernel


@pytest.mark.parametrize(
    "in_channels,out_channels,kernel_size,stride,padding,dilation,bias,rank",
    [
        (3, 4, 3, 1, 1, 1, False, 5),
        (4, 6, (3, 5), 2, (1, 2), 1, True, 7),
        (4, 4, 5, 1, 4, 2, False, 3),
        (2, 3, 3, 1, 0, 1, True, 18),   # full rank: C_in*k*k
    ],
)
def test_two_stage_forward_equals_conv2d_with_the_hand_assembled_kernel(
    in_channels, out_channels, kernel_size, stride, padding, dilation, bias, rank
):
    torch.manual_seed(0)
    layer = BasisConv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias, rank=rank).double()
    if bias:
        nn.init.normal_(layer.bias)
    images = torch.randn(2, in_channels, 11, 13, dtype=torch.float64)
    kernel = hand_assembled_kernel(layer.combination, layer.basis)
    torch.testing.assert_close(layer.kernel(), kernel)
    torch.testing.assert_close(layer(images), F.conv2d(images, kernel, layer.bias, stride, padding, dilation))


def test_random_basis_is_orthonormal_fixed_and_saved():
    torch.manual_seed(0)
    layer = BasisConv2d(8, 16, 3, padding=1, rank=12)
    flat = layer.basis.reshape(12, -1).double()
    torch.testing.assert_close(flat @ flat.T, torch.eye(12, dtype=torch.float64), atol=1e-6, rtol=0)
    assert [name for name, _ in layer.named_parameters()] == ["combination"]
    assert [name for name, _ in layer.named_buffers()] == ["basis"]
    assert not layer.basis.requires_grad
    assert set(layer.state_dict()) == {"basis", "combination"}
    assert layer.double().basis.dtype == torch.float64


def test_random_orthogonal_basis_is_seeded_by_its_generator():
    first = random_orthogonal_basis(4, 3, (3, 3), generator=torch.Generator().manual_seed(5))
    second = random_orthogonal_basis(4, 3, (3, 3), generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, second) and first.shape == (4, 3, 3, 3)


def test_gradients_reach_the_combination_and_bias_and_never_the_basis():
    torch.manual_seed(0)
    layer = BasisConv2d(3, 4, 3, bias=True, rank=6)
    before = layer.basis.clone()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer(torch.randn(2, 3, 6, 6)).square().sum().backward()
    assert layer.combination.grad.abs().sum() > 0 and layer.bias.grad.abs().sum() > 0
    assert layer.basis.grad is None
    optimizer.step()
    assert torch.equal(layer.basis, before)


def test_parameter_counts_follow_from_the_definition():
    layer = BasisConv2d(64, 128, 3, bias=True, rank=20)
    assert sum(p.numel() for p in layer.parameters()) == 128 * 20 + 128
    assert layer.basis.numel() == 20 * 64 * 9
    # conv4: stem 3*64*9, three BasisConvs 64*r each, BN 2*64*4, head (64*5*5)*5 + 5 at 84 px.
    model = create_backbone("conv4", "basis", rank=10)
    assert sum(p.numel() for p in model.parameters()) == 1_728 + 3 * 64 * 10 + 512 + 1_600 * 5 + 5


@pytest.mark.parametrize("in_channels,out_channels,rank", [(64, 64, 32), (32, 128, 8)])
def test_initial_output_variance_matches_kaiming_conv(in_channels, out_channels, rank):
    torch.manual_seed(0)
    images = torch.randn(8, in_channels, 10, 10)
    ours, reference = [], []
    for _ in range(20):
        layer = BasisConv2d(in_channels, out_channels, 3, padding=1, rank=rank)
        conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
        with torch.no_grad():
            ours.append(layer(images).var().item())
            reference.append(conv(images).var().item())
    assert 0.8 < sum(ours) / sum(reference) < 1.2


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(rank=0), "rank must be an integer >= 1"),
        (dict(rank=2.5), "rank must be an integer >= 1"),
        (dict(rank=37), r"rank=37 exceeds C_in\*kh\*kw = 4\*3\*3 = 36"),
        (dict(), "needs a rank"),
        (dict(basis=torch.randn(3, 5, 3, 3)), r"basis must have shape \(rank, 4, 3, 3\)"),
        (dict(rank=2, basis=torch.randn(3, 4, 3, 3)), "rank=2 but the given basis has 3 filters"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BasisConv2d(4, 6, 3, **kwargs)


# ----------------------------------------------------------------------------------------------
# Conversion


def trained_like_backbone(name="conv4", image_size=32):
    """A standard backbone whose 3x3 kernels have a decaying spectrum, like trained ones."""
    torch.manual_seed(0)
    model = create_backbone(name, "standard", num_classes=5, image_size=image_size).double()
    with torch.no_grad():
        for _, conv in decomposable_convolutions(model):
            flat = conv.weight.reshape(conv.out_channels, -1)
            u, s, vh = torch.linalg.svd(flat, full_matrices=False)
            decay = torch.exp(-torch.arange(s.numel(), dtype=s.dtype) / 6)
            conv.weight.copy_(((u * (s * decay)) @ vh).reshape_as(conv.weight))
    return model


def test_conversion_keeps_the_top_eigenvectors_of_each_layers_filters():
    model = trained_like_backbone()
    converted, report = convert_to_basisconv(model, 10)
    for (name, conv), layer_report in zip(decomposable_convolutions(model), report.layers):
        layer = converted.get_submodule(name)
        assert isinstance(layer, BasisConv2d) and layer.rank == 10 == layer_report.rank
        flat = conv.weight.detach().reshape(conv.out_channels, -1)
        # Independent reference: eigen-decomposition of W^T W, top 10 eigenvectors V, W_r = W V V^T.
        eigenvalues, eigenvectors = torch.linalg.eigh(flat.T @ flat)
        top = eigenvectors[:, -10:]
        torch.testing.assert_close(layer.kernel().reshape(conv.out_channels, -1), flat @ top @ top.T)
        # The basis spans the same space as the eigenvectors, orthonormally.
        basis = layer.basis.reshape(10, -1)
        torch.testing.assert_close(basis @ basis.T, torch.eye(10, dtype=torch.float64))
        torch.testing.assert_close(basis.T @ basis, top @ top.T)
        expected_error = math.sqrt(eigenvalues[:-10].clamp_min(0).sum() / eigenvalues.sum())
        assert layer_report.relative_error == pytest.approx(expected_error, rel=1e-6)
        assert layer_report.energy_kept == pytest.approx(1 - expected_error ** 2, rel=1e-6)
        assert layer_report.trainable_after == conv.out_channels * 10
        assert layer_report.fixed_after == 10 * conv.in_channels * 9
    squared = [(layer.relative_error * torch.linalg.norm(conv.weight).item()) ** 2
               for (_, conv), layer in zip(decomposable_convolutions(model), report.layers)]
    norms = [torch.linalg.norm(conv.weight).item() ** 2 for _, conv in decomposable_convolutions(model)]
    assert report.total_relative_error == pytest.approx(math.sqrt(sum(squared) / sum(norms)), rel=1e-6)


def test_full_rank_conversion_reproduces_the_model_and_leaves_the_input_alone():
    model = create_backbone("resnet10", "standard", num_classes=5, track_running_stats=False).double()
    original = {name: p.clone() for name, p in model.state_dict().items()}
    converted, report = convert_to_basisconv(model, 10_000)  # capped at min(C_out, C_in*9)
    assert report.total_relative_error < 1e-12
    assert all(layer.rank == layer.full_rank == min(layer.out_channels, layer.in_channels * 9)
               for layer in report.layers)
    images = torch.randn(2, 3, 40, 40, dtype=torch.float64)
    torch.testing.assert_close(converted(images), model(images))
    assert all(torch.equal(p, original[name]) for name, p in model.state_dict().items())
    # The stem and the 1x1 shortcuts stay ordinary convolutions.
    assert type(converted.stem[0]) is nn.Conv2d and type(converted.stages[1][0].shortcut[0]) is nn.Conv2d
    assert len(report.layers) == 8
    assert converted.conv_spec.kind == "basis"


def test_energy_picks_the_smallest_rank_that_keeps_it():
    model = trained_like_backbone()
    converted, report = convert_to_basisconv(model, energy=0.95)
    for name, conv in decomposable_convolutions(model):
        s = torch.linalg.svdvals(conv.weight.reshape(conv.out_channels, -1))
        kept = torch.cumsum(s ** 2, 0) / (s ** 2).sum()
        rank = report.ranks[name]
        assert kept[rank - 1] >= 0.95 and (rank == 1 or kept[rank - 2] < 0.95)
        assert converted.get_submodule(name).rank == rank
    # The ranks rebuild the same architecture, so a converted state dict loads into it.
    rebuilt, _ = convert_to_basisconv(model, report.ranks)
    rebuilt.load_state_dict(converted.state_dict())


def test_report_is_serializable_and_readable():
    _, report = convert_to_basisconv(trained_like_backbone(), 4)
    as_dict = report.to_dict()
    assert as_dict["trainable_after"] == 3 * 64 * 4 and len(as_dict["layers"]) == 3
    text = report.format()
    assert "blocks.1.0" in text and "total relative reconstruction error" in text


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda m: convert_to_basisconv(m), "exactly one of rank"),
        (lambda m: convert_to_basisconv(m, 4, energy=0.9), "exactly one of rank"),
        (lambda m: convert_to_basisconv(m, 0), "rank must be an integer >= 1"),
        (lambda m: convert_to_basisconv(m, energy=1.5), r"energy must be a fraction in \(0, 1\]"),
        (lambda m: convert_to_basisconv(m, {"blocks.1.0": 4}), "missing"),
        (lambda m: convert_to_basisconv(create_backbone("conv4", "acdc-net"), 4), "needs a standard-conv backbone"),
        (lambda m: convert_to_basisconv(nn.Sequential(nn.Conv2d(3, 4, 3)), 4), "no factory-built convolution"),
    ],
)
def test_bad_conversion_requests_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(create_backbone("conv4", "standard"))
