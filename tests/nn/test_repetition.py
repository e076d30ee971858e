"""Specification of fewshot_acdc.nn.repetition: kernels tiled from a small base with learned per-tile scales."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from fewshot_acdc.models import create_backbone
from fewshot_acdc.nn import RepeatedConv2d, tile_kernel


def hand_tiled_kernel(base, scales, out_channels, in_channels):
    """W[o, c] = S[o // bo, c // bi] * B[o % bo, c % bi], entry by entry."""
    base_out, base_in = base.shape[:2]
    kernel = torch.zeros(out_channels, in_channels, *base.shape[2:], dtype=base.dtype)
    for o, c in itertools.product(range(out_channels), range(in_channels)):
        kernel[o, c] = scales[o // base_out, c // base_in] * base[o % base_out, c % base_in]
    return kernel


def repeated_layers(model):
    return [m for m in model.modules() if isinstance(m, RepeatedConv2d)]


@pytest.mark.parametrize(
    "in_channels,out_channels,kernel_size,stride,padding,bias,base_channels",
    [
        (4, 6, 3, 1, 1, False, 2),     # 3 x 2 tiles
        (6, 5, 3, 2, 1, True, 4),      # overhanging tiles are cropped
        (3, 4, (3, 5), 1, (1, 2), False, 8),  # base wider than the layer: a single tile
        (8, 8, 1, 1, 0, False, 3),
    ],
)
def test_forward_equals_conv2d_with_the_hand_tiled_kernel(in_channels, out_channels, kernel_size, stride, padding,
                                                          bias, base_channels):
    torch.manual_seed(0)
    layer = RepeatedConv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias,
                           base_channels=base_channels).double()
    if bias:
        nn.init.normal_(layer.bias)
    assert layer.repeats == (math.ceil(out_channels / min(base_channels, out_channels)),
                             math.ceil(in_channels / min(base_channels, in_channels)))
    kernel = hand_tiled_kernel(layer.base, layer.scales, out_channels, in_channels)
    images = torch.randn(2, in_channels, 9, 11, dtype=torch.float64)
    torch.testing.assert_close(layer.kernel(), kernel)
    torch.testing.assert_close(layer(images), F.conv2d(images, kernel, layer.bias, stride, padding))


def test_tile_kernel_repeats_the_base_exactly():
    base = torch.randn(2, 3, 3, 3)
    kernel = tile_kernel(base, torch.ones(2, 2), 4, 6)
    torch.testing.assert_close(kernel, base.repeat(2, 2, 1, 1))


def test_gradients_reach_base_scales_and_bias():
    torch.manual_seed(0)
    layer = RepeatedConv2d(6, 4, 3, bias=True, base_channels=2)
    layer(torch.randn(2, 6, 6, 6)).square().sum().backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_net_scope_shares_one_base_across_layers_sized_by_the_widest():
    model = create_backbone("resnet10", "repeat-net", base_width=16)
    names = [name for name, _ in model.named_parameters() if name.startswith("coefficient_bank")]
    assert names == ["coefficient_bank.base_net"]
    base = model.coefficient_bank.base_net
    assert tuple(base.shape) == (16, 16, 3, 3)
    layers = repeated_layers(model)
    assert len(layers) == 8 and all(layer.base is base for layer in layers)
    assert len({id(layer.scales) for layer in layers}) == 8
    widening = model.stages[1][0].conv1      # 64 -> 128: 8 x 4 tiles of the 16 x 16 base
    assert widening.repeats == (8, 4) and tuple(widening.scales.shape) == (8, 4)


def test_narrow_layers_use_the_leading_slice_of_a_shared_base():
    model = create_backbone("conv4", "repeat-net", base_width=128, image_size=32).double()
    base = model.coefficient_bank.base_net
    assert tuple(base.shape) == (64, 64, 3, 3)  # capped by the widest layer
    for layer in repeated_layers(model):
        torch.testing.assert_close(layer.kernel(), layer.scales[0, 0] * base[:64, :64])


def test_block_and_layer_scopes():
    block = create_backbone("resnet18", "repeat-block", base_width=32)
    shapes = {name: tuple(p.shape) for name, p in block.named_parameters() if name.startswith("coefficient_bank")}
    assert shapes == {f"coefficient_bank.base_stage{i}": (32, 32, 3, 3) for i in range(1, 5)}
    assert block.stages[1][0].conv1.base is block.coefficient_bank.base_stage2
    layer = create_backbone("resnet10", "repeat-layer", base_width=32)
    assert dict(layer.coefficient_bank.named_parameters()) == {}
    layers = repeated_layers(layer)
    assert len({id(m.base) for m in layers}) == len(layers)


def test_shared_base_receives_the_sum_of_every_layers_gradient():
    torch.manual_seed(0)
    model = create_backbone("conv4", "repeat-net", base_width=16, image_size=32).double()
    images = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    model(images).sum().backward()
    gradient = model.coefficient_bank.base_net.grad.clone()
    copies = []
    for layer in repeated_layers(model):
        copy = nn.Parameter(model.coefficient_bank.base_net.detach().clone())
        layer.base = copy
        copies.append(copy)
    model.zero_grad()
    model(images).sum().backward()
    torch.testing.assert_close(gradient, sum(copy.grad for copy in copies))


def test_functional_call_replaces_every_tied_occurrence_of_the_base():
    torch.manual_seed(0)
    model = create_backbone("conv4", "repeat-net", base_width=8, image_size=32)
    images = torch.randn(2, 3, 32, 32)
    params = dict(model.named_parameters())
    doubled = {**params, "coefficient_bank.base_net": 2 * params["coefficient_bank.base_net"]}
    out = functional_call(model, doubled, (images,))
    with torch.no_grad():
        model.coefficient_bank.base_net.mul_(2)
    torch.testing.assert_close(out, model(images))


def test_parameter_counts_follow_from_the_definition():
    # Conv4 at 84 px: three 64->64 convs; base b = 16 -> 4 x 4 tiles per layer.
    fixed = 1_728 + 2 * 64 * 4 + 1_600 * 5 + 5        # stem, BN, head
    net = create_backbone("conv4", "repeat-net", base_width=16)
    assert sum(p.numel() for p in net.parameters()) == fixed + 16 * 16 * 9 + 3 * 16
    layer = create_backbone("conv4", "repeat-layer", base_width=16)
    assert sum(p.numel() for p in layer.parameters()) == fixed + 3 * (16 * 16 * 9 + 16)
    # Non-dividing base: 64 = 3 * 20 + 4 -> 4 tiles per side, the last cropped.
    single = RepeatedConv2d(64, 64, 3, base_channels=20)
    assert single.repeats == (4, 4) and sum(p.numel() for p in single.parameters()) == 20 * 20 * 9 + 16


def test_initial_output_variance_matches_kaiming_conv():
    torch.manual_seed(0)
    images = torch.randn(8, 64, 10, 10)
    ours, reference = [], []
    for _ in range(40):
        layer = RepeatedConv2d(64, 64, 3, padding=1, base_channels=16)
        conv = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
        with torch.no_grad():
            ours.append(layer(images).var().item())
            reference.append(conv(images).var().item())
    assert 0.75 < sum(ours) / sum(reference) < 1.25


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(base_channels=0), "base channels must be an integer >= 1"),
        (dict(base_channels=1.5), "base channels must be an integer >= 1"),
        (dict(shared_base="later"), "shared_base must be a Parameter, None or 'deferred'"),
        (dict(shared_base=nn.Parameter(torch.zeros(2, 4, 3, 3))), r"shared base of shape \(2, 4, 3, 3\) cannot serve"),
        (dict(shared_base=nn.Parameter(torch.zeros(4, 4, 5, 5))), "cannot serve a layer that needs"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(kwargs, message):
    arguments = {"base_channels": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        RepeatedConv2d(8, 8, 3, **arguments)


def test_deferred_layer_that_was_never_attached_says_how_to_fix_it():
    layer = RepeatedConv2d(4, 4, 3, base_channels=2, shared_base="deferred")
    with pytest.raises(RuntimeError, match="ConvFactory"):
        layer(torch.randn(1, 4, 5, 5))
