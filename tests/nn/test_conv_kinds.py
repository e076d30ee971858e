"""The BasisConv, DCF and learnable-repetition kinds in the factory, roles, scopes and every backbone."""
from collections import Counter

import pytest
import torch

from fewshot_acdc.meta import adapted_parameter_names
from fewshot_acdc.meta.scopes import KIND_SCOPES, SCOPES
from fewshot_acdc.models import create_backbone, list_backbones
from fewshot_acdc.nn import CONV_KINDS, BasisConv2d, ConvSpec, DCFConv2d, RepeatedConv2d, parameter_roles

NEW_KINDS = ("basis", "dcf", "repeat-net", "repeat-block", "repeat-layer")
LAYER_TYPES = {"basis": BasisConv2d, "dcf": DCFConv2d, "repeat-net": RepeatedConv2d,
               "repeat-block": RepeatedConv2d, "repeat-layer": RepeatedConv2d}


def test_new_kinds_are_factory_choices():
    assert set(NEW_KINDS) <= set(CONV_KINDS)
    assert [ConvSpec(kind).family for kind in NEW_KINDS] == ["basis", "dcf", "repeat", "repeat", "repeat"]
    assert [ConvSpec(kind).sharing for kind in NEW_KINDS] == ["layer", "layer", "net", "block", "layer"]
    assert not any(ConvSpec(kind).is_acdc for kind in NEW_KINDS)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(kind="basiss"), r"unknown conv kind 'basiss' \(did you mean 'basis'\?\)"),
        (dict(kind="repeat-nett"), r"did you mean 'repeat-net'"),
        (dict(kind="basis", size=0), r"rank \(r basis filters per layer\) must be an integer >= 1"),
        (dict(kind="dcf", size=-1), r"bessel_atoms \(K Fourier-Bessel atoms per layer\) must be"),
        (dict(kind="repeat-net", size=0), r"base_width \(b channels in the repeated base\) must be"),
        (dict(kind="dcf", group_size=32), "only used by the grouped kinds"),
    ],
)
def test_conv_spec_validates_the_new_kinds(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvSpec(**kwargs)


@pytest.mark.parametrize("kind,keyword", [("acdc-net", "atoms"), ("acdc-g-layer", "atoms"), ("basis", "rank"),
                                          ("dcf", "bessel_atoms"), ("repeat-block", "base_width")])
def test_each_kind_is_sized_by_its_own_keyword(kind, keyword):
    group = {"group_size": 16} if "-g-" in kind else {}
    assert ConvSpec.sized(kind, **group, **{keyword: 5}).size == 5
    assert ConvSpec.sized(kind, **group).size == 8  # the default when not given
    other = next(key for key in ("atoms", "rank", "bessel_atoms", "base_width") if key != keyword)
    with pytest.raises(ValueError, match=f"{other} is the size of .*; conv '{kind}' is sized by {keyword} "
                                         f".*give {keyword} instead"):
        ConvSpec.sized(kind, **group, **{other: 5})


def test_create_backbone_takes_the_kinds_size_under_its_name():
    model = create_backbone("conv4", "basis", rank=6, image_size=32)
    assert {m.rank for m in model.modules() if isinstance(m, BasisConv2d)} == {6}
    with pytest.raises(ValueError, match="atoms is the size of acdc-\\* convolutions; conv 'dcf' is sized by bessel_atoms"):
        create_backbone("conv4", "dcf", atoms=6)
    with pytest.raises(ValueError, match="has no size setting: leave rank out"):
        create_backbone("conv4", "standard", rank=6)
    assert ConvSpec.sized("standard").size is None and ConvSpec("standard", 8).size is None


def test_acdc_only_options_are_ignored_by_the_new_kinds():
    # The config's default atom_drop (0.1) must not break a BasisConv/DCF/repetition model.
    model = create_backbone("conv4", ConvSpec("basis", size=4, atom_drop=0.1), image_size=32)
    assert sum(isinstance(m, BasisConv2d) for m in model.modules()) == 3


@pytest.mark.parametrize("kind", NEW_KINDS)
@pytest.mark.parametrize("name", ["resnet18-cifar", "vgg16", "wrn-40-4"])
def test_classification_backbones_build_and_backpropagate(name, kind):
    torch.manual_seed(0)
    model = create_backbone(name, ConvSpec(kind, 4), num_classes=10, track_running_stats=False)
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    logits.logsumexp(1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    layers = [m for m in model.modules() if isinstance(m, LAYER_TYPES[kind])]
    assert layers and all(hasattr(layer, "factory_block") for layer in layers)


def test_every_registered_backbone_takes_every_kind():
    for name in list_backbones():
        for kind in NEW_KINDS:
            model = create_backbone(name, ConvSpec(kind, 4), image_size=32)
            assert any(isinstance(m, LAYER_TYPES[kind]) for m in model.modules()), (name, kind)


@pytest.mark.parametrize(
    "kind,expected",
    [
        ("basis", {"combination": 8, "conv": 1 + 3, "norm": 24, "head": 2}),
        ("dcf", {"coefficients": 8, "conv": 1 + 3, "norm": 24, "head": 2}),
        ("repeat-net", {"base": 1, "scales": 8, "conv": 1 + 3, "norm": 24, "head": 2}),
        ("repeat-block", {"base": 4, "scales": 8, "conv": 1 + 3, "norm": 24, "head": 2}),
        ("repeat-layer", {"base": 8, "scales": 8, "conv": 1 + 3, "norm": 24, "head": 2}),
    ],
)
def test_roles_of_each_kind(kind, expected):
    model = create_backbone("resnet10", ConvSpec(kind, 4))
    roles = parameter_roles(model)
    assert list(roles) == [name for name, _ in model.named_parameters()]
    assert Counter(roles.values()) == expected  # tensors per role: stem + 3 shortcuts are "conv", 12 BNs "norm"
    if kind == "repeat-net":
        assert roles["coefficient_bank.base_net"] == "base"   # registered in the bank, used by the layers


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_each_kinds_small_part_scope_selects_exactly_that_part(kind):
    model = create_backbone("conv4", ConvSpec(kind, 4))
    scope = KIND_SCOPES[ConvSpec(kind).family]
    names = adapted_parameter_names(model, scope)
    layer_type = LAYER_TYPES[kind]
    attribute = {"basis": "combination", "dcf": "coefficients", "repeat": "scales"}[ConvSpec(kind).family]
    expected = {id(getattr(m, attribute)) for m in model.modules() if isinstance(m, layer_type)}
    params = dict(model.named_parameters())
    assert {id(params[name]) for name in names} == expected
    with_head = adapted_parameter_names(model, f"{scope}+head")
    assert set(with_head) == set(names) | {"head.weight", "head.bias"}


@pytest.mark.parametrize("scope,kind,message", [
    ("combination", "dcf", "'combination' needs a BasisConv backbone"),
    ("scales", "basis", "'scales' needs a learnable-repetition backbone"),
    ("coefficients", "repeat-net", "'coefficients' needs an ACDC or DCF backbone"),
    ("atoms", "dcf", "'atoms' needs an ACDC backbone"),
])
def test_a_scope_the_kind_lacks_is_a_value_error(scope, kind, message):
    with pytest.raises(ValueError, match=message):
        adapted_parameter_names(create_backbone("conv4", ConvSpec(kind, 4)), scope)


def test_fixed_bases_are_buffers_not_seen_by_optimizers():
    for kind in ("basis", "dcf"):
        model = create_backbone("conv4", ConvSpec(kind, 4))
        parameter_ids = {id(p) for p in model.parameters()}
        buffers = [b for m in model.modules() if isinstance(m, LAYER_TYPES[kind]) for b in m.buffers(recurse=False)]
        assert len(buffers) == 3 and not any(id(b) in parameter_ids for b in buffers)
    assert set(SCOPES) >= {"coefficients", "combination", "scales"}
