"""Specification of fewshot_acdc.nn.factory: sharing scopes, the coefficient bank, ConvSpec."""
import pytest
import torch
from torch import nn
from torch.func import functional_call

from fewshot_acdc.models import create_backbone
from fewshot_acdc.nn import ACDCConv2d, CoefficientBank, ConvFactory, ConvSpec
from fewshot_acdc.nn.acdc import compose_kernel


def acdc_layers(model):
    return [m for m in model.modules() if isinstance(m, ACDCConv2d)]


def test_net_scope_shares_one_tensor_sized_by_the_largest_layer():
    model = create_backbone("resnet18", "acdc-net", atoms=4)
    names = [name for name, _ in model.named_parameters() if "coefficient" in name]
    assert names == ["coefficient_bank.net"]
    bank = model.coefficient_bank.net
    assert tuple(bank.shape) == (512, 512, 4)
    layers = acdc_layers(model)
    assert len(layers) == 16  # every 3x3 conv but the stem
    assert all(layer.coefficients is bank for layer in layers)


def test_smaller_layers_use_the_leading_slice_of_the_shared_tensor():
    model = create_backbone("resnet10", "acdc-net", atoms=4).double()
    bank = model.coefficient_bank.net
    for layer in acdc_layers(model):
        expected = compose_kernel(bank[: layer.out_channels, : layer.in_channels], layer.atoms)
        torch.testing.assert_close(layer.kernel(), expected)


def test_block_scope_has_one_tensor_per_stage_of_equal_width():
    model = create_backbone("resnet18", "acdc-block", atoms=8)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters() if name.startswith("coefficient_bank")}
    assert shapes == {
        "coefficient_bank.stage1": (64, 64, 8), "coefficient_bank.stage2": (128, 128, 8),
        "coefficient_bank.stage3": (256, 256, 8), "coefficient_bank.stage4": (512, 512, 8),
    }
    stage2 = model.stages[1]
    assert stage2[0].conv1.coefficients is model.coefficient_bank.stage2  # 64 -> 128 widening conv
    assert stage2[1].conv2.coefficients is model.coefficient_bank.stage2


def test_layer_scope_gives_every_layer_its_own_coefficients():
    model = create_backbone("resnet10", "acdc-layer", atoms=8)
    assert len(dict(model.coefficient_bank.named_parameters())) == 0
    layers = acdc_layers(model)
    assert len({id(layer.coefficients) for layer in layers}) == len(layers)


def test_grouped_net_scope_shares_one_s_by_s_tensor():
    model = create_backbone("resnet10", "acdc-g-net", atoms=8, group_size=32)
    assert tuple(model.coefficient_bank.net.shape) == (32, 32, 8)
    widening = model.stages[1][0].conv1  # 64 -> 128: 4 groups of 16 in / 32 out
    assert (widening.groups, widening.in_per_group, widening.out_per_group) == (4, 16, 32)
    assert tuple(widening.atoms.shape) == (4, 8, 3, 3)


def test_shared_tensor_is_listed_once_so_optimizers_see_it_once():
    model = create_backbone("conv4", "acdc-net", atoms=8)
    parameters = list(model.parameters())
    assert len(parameters) == len({id(p) for p in parameters})
    total = sum(p.numel() for p in parameters)
    coefficient_elements = model.coefficient_bank.net.numel()
    assert total == sum(p.numel() for name, p in model.named_parameters())
    assert coefficient_elements == 64 * 64 * 8


def test_shared_tensor_receives_the_sum_of_every_layers_gradient():
    torch.manual_seed(0)
    model = create_backbone("conv4", "acdc-net", atoms=4, image_size=32).double()
    images = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    model(images).sum().backward()
    gradient = model.coefficient_bank.net.grad.clone()
    # Recompute with per-layer private copies: the shared gradient is their sum.
    copies = []
    for layer in acdc_layers(model):
        copy = nn.Parameter(model.coefficient_bank.net.detach().clone())
        layer.coefficients = copy
        copies.append(copy)
    model.zero_grad()
    model(images).sum().backward()
    torch.testing.assert_close(gradient, sum(copy.grad for copy in copies))


def test_functional_call_replaces_every_tied_occurrence():
    torch.manual_seed(0)
    model = create_backbone("conv4", "acdc-net", atoms=4, image_size=32)
    images = torch.randn(2, 3, 32, 32)
    params = dict(model.named_parameters())
    zeroed = {**params, "coefficient_bank.net": torch.zeros_like(params["coefficient_bank.net"])}
    # With zero coefficients every decomposed conv outputs zeros; only the stem contributes.
    features = functional_call(model, zeroed, (images,), {}, strict=False)
    model_out = model(images)
    assert not torch.allclose(features, model_out)
    with torch.no_grad():
        model.coefficient_bank.net.zero_()
    torch.testing.assert_close(features, model(images))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(kind="acdc-nett"), "unknown conv kind 'acdc-nett' \\(did you mean 'acdc-net'\\?\\)"),
        (dict(kind="acdc-g-net"), "needs a group_size"),
        (dict(kind="acdc-net", group_size=32), "only used by the grouped kinds"),
        (dict(kind="acdc-net", size=0), "atoms must be an integer >= 1"),
        (dict(kind="acdc-block", atom_drop=1.5), "atom_drop must be a probability"),
    ],
)
def test_conv_spec_validates_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvSpec(**kwargs)


def test_group_size_that_does_not_divide_a_layer_fails_at_model_construction():
    with pytest.raises(ValueError, match="group_size=48 does not divide"):
        create_backbone("resnet10", "acdc-g-net", group_size=48)


def test_factory_builds_standard_convs_with_kaiming_init_and_refuses_reuse():
    factory = ConvFactory(ConvSpec("standard"))
    conv = factory(64, 64, 3, padding=1, block="b")
    assert isinstance(conv, nn.Conv2d)
    assert abs(conv.weight.var().item() - 2 / (64 * 9)) < 0.2 * 2 / (64 * 9)
    factory.finalize(CoefficientBank())
    with pytest.raises(RuntimeError, match="already called"):
        factory(64, 64, 3, block="b")


def test_deferred_layer_that_was_never_attached_says_how_to_fix_it():
    layer = ACDCConv2d(4, 4, 3, shared_coefficients="deferred")
    with pytest.raises(RuntimeError, match="ConvFactory"):
        layer(torch.randn(1, 4, 5, 5))
