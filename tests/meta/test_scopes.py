"""Specification of fewshot_acdc.meta.scopes: which parameters each inner-loop scope adapts.

Checked against the layers themselves (the Parameter objects ACDC, DCF, BasisConv and repetition
layers hold, and the ``head`` module), not against the role table the scopes are built from.
"""
from __future__ import annotations

import pytest
from torch import nn

from fewshot_acdc.config import ADAPT_SCOPES
from fewshot_acdc.meta.scopes import KIND_SCOPES, SCOPES, adapted_parameter_names, check_scope
from fewshot_acdc.models import create_backbone
from fewshot_acdc.nn import ACDCConv2d


def _model(conv: str) -> nn.Module:
    grouped = {"group_size": 8} if "-g-" in conv else {}
    return create_backbone("conv4", conv, image_size=28, track_running_stats=False, **grouped)


def _ids(model: nn.Module, names) -> set:
    parameters = dict(model.named_parameters())
    return {id(parameters[name]) for name in names}


def _held_by(model: nn.Module, attribute: str) -> set:
    """ids of the ``attribute`` parameters of every conv layer that has one (shared ones once)."""
    return {id(getattr(m, attribute)) for m in model.modules()
            if isinstance(getattr(m, attribute, None), nn.Parameter) and m is not model}


def test_the_config_offers_exactly_the_scopes_the_engine_knows():
    assert tuple(SCOPES) == ADAPT_SCOPES
    assert set(KIND_SCOPES.values()) <= set(SCOPES)


@pytest.mark.parametrize("conv", ["standard", "acdc-net", "dcf"])
def test_all_adapts_every_parameter_once(conv):
    model = _model(conv)
    names = adapted_parameter_names(model, "all")
    assert names == [name for name, _ in model.named_parameters()]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("conv", ["acdc-net", "acdc-layer", "acdc-g-block"])
def test_atoms_adapts_the_atoms_of_every_acdc_layer_and_nothing_else(conv):
    model = _model(conv)
    layers = [m for m in model.modules() if isinstance(m, ACDCConv2d)]
    assert layers, "the backbone has ACDC layers"
    assert _ids(model, adapted_parameter_names(model, "atoms")) == {id(layer.atoms) for layer in layers}


def test_head_scopes_add_exactly_the_classifier():
    model = _model("acdc-net")
    head = {id(p) for p in model.head.parameters()}
    assert _ids(model, adapted_parameter_names(model, "head")) == head
    atoms = _ids(model, adapted_parameter_names(model, "atoms"))
    assert _ids(model, adapted_parameter_names(model, "atoms+head")) == atoms | head


def test_coefficients_of_acdc_net_is_the_one_shared_tensor():
    model = _model("acdc-net")
    names = adapted_parameter_names(model, "coefficients")
    assert len(names) == 1, "ACDC-net shares one coefficient tensor across the network"
    shared = dict(model.named_parameters())[names[0]]
    assert all(layer.coefficients is shared or layer.coefficients.data_ptr() == shared.data_ptr()
               for layer in model.modules() if isinstance(layer, ACDCConv2d))


@pytest.mark.parametrize("conv, scope, attribute", [("dcf", "coefficients", "coefficients"),
                                                    ("basis", "combination", "combination"),
                                                    ("repeat-layer", "scales", "scales")])
def test_each_kinds_small_part_is_what_its_layers_hold(conv, scope, attribute):
    model = _model(conv)
    assert _ids(model, adapted_parameter_names(model, scope)) == _held_by(model, attribute)


@pytest.mark.parametrize("scope, needs", [("atoms", "ACDC backbone"), ("combination", "BasisConv"),
                                          ("scales", "learnable-repetition")])
def test_a_scope_that_selects_nothing_is_refused_naming_the_kind_it_needs(scope, needs):
    with pytest.raises(ValueError, match=rf"selects no parameter.*{needs}"):
        adapted_parameter_names(_model("standard"), scope)


def test_an_unknown_scope_names_the_closest_one():
    with pytest.raises(ValueError, match=r"'atom'.*atoms"):
        check_scope("atom")
