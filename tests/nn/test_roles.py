"""Specification of fewshot_acdc.nn.roles: what each parameter is."""
from collections import Counter

from fewshot_acdc.models import create_backbone
from fewshot_acdc.nn import parameter_roles


def test_roles_of_an_acdc_resnet():
    model = create_backbone("resnet10", "acdc-net", atoms=8)
    roles = parameter_roles(model)
    assert list(roles) == [name for name, _ in model.named_parameters()]
    assert roles["coefficient_bank.net"] == "coefficients"
    assert roles["stem.0.weight"] == "conv"
    assert roles["stages.1.0.shortcut.0.weight"] == "conv"
    assert roles["stages.0.0.conv1.atoms"] == "atoms"
    assert roles["stages.0.0.bn1.weight"] == "norm"
    assert roles["head.weight"] == roles["head.bias"] == "head"
    counts = Counter(roles.values())
    assert counts["atoms"] == 8 and counts["coefficients"] == 1


def test_standard_backbone_has_no_acdc_roles():
    roles = parameter_roles(create_backbone("conv4", "standard"))
    assert set(roles.values()) == {"conv", "norm", "head"}


def test_layer_scope_coefficients_are_coefficients():
    roles = parameter_roles(create_backbone("conv4", "acdc-layer"))
    assert roles["blocks.1.0.coefficients"] == "coefficients"
