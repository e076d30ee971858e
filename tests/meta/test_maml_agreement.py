"""The engine's meta-gradient against learn2learn's MAML and higher's innerloop_ctx.

Same model (seed), same meta-batch of two episodes, float64 (in float32 the meta-gradient of a
fresh ResNet moves by percents with the thread count, so float64 is the fair comparison).
Required agreement: every parameter tensor within 1e-6 of the reference, relative to that
tensor's largest reference entry.
"""
from __future__ import annotations

import functools

import pytest
import torch

from fewshot_acdc.meta import MAML
from .maml_references import REFERENCES
from .maml_testing import build_model, max_relative_error, random_episode

TOLERANCE = 1e-6
INNER_LR = 0.05
IMAGE_SIZE = 32

BACKBONE_CONV_SCOPE = [
    (backbone, conv, scope)
    for backbone in ("conv4", "resnet10")
    for conv, scope in (("standard", "all"), ("acdc-net", "all"), ("acdc-net", "atoms"),
                        ("acdc-block", "all"), ("acdc-block", "atoms"),
                        ("acdc-net", "head"))  # head: the engine computes the support features once
]
CASES = [
    pytest.param(backbone, conv, scope, first_order, steps,
                 id=f"{backbone}-{conv}-{scope}-{'first' if first_order else 'second'}-{steps}step")
    for backbone, conv, scope in BACKBONE_CONV_SCOPE
    for first_order in (False, True)
    for steps in (1, 3)
]


def episodes():
    return [random_episode(seed, image_size=IMAGE_SIZE) for seed in (11, 12)]


@functools.lru_cache(maxsize=None)
def engine_meta_gradient(backbone, conv, scope, first_order, steps, task_batching="sequential"):
    model = build_model(backbone, conv, image_size=IMAGE_SIZE)
    maml = MAML(model, scope=scope, inner_lr=INNER_LR, inner_steps=steps, first_order=first_order,
                task_batching=task_batching)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    maml.meta_train_step(episodes(), torch.optim.SGD(model.parameters(), lr=0.0))
    for name, p in model.named_parameters():  # lr 0: the step must leave the model as it was
        assert torch.equal(p, before[name]), name
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}, tuple(maml.adapted_names)


@pytest.mark.reference
@pytest.mark.parametrize("reference", sorted(REFERENCES))
@pytest.mark.parametrize("backbone, conv, scope, first_order, steps", CASES)
def test_meta_gradient_matches_reference(reference, backbone, conv, scope, first_order, steps):
    ours, adapted_names = engine_meta_gradient(backbone, conv, scope, first_order, steps)
    model = build_model(backbone, conv, image_size=IMAGE_SIZE)
    theirs = REFERENCES[reference](model, episodes(), adapted_names, INNER_LR, steps, first_order)
    assert max_relative_error(ours, theirs) <= TOLERANCE


@pytest.mark.reference
@pytest.mark.parametrize("reference", sorted(REFERENCES))
def test_references_see_a_second_order_term(reference):
    """Guards the matrix against a vacuous pass: on this case first- and second-order differ."""
    first, names = engine_meta_gradient("conv4", "acdc-net", "atoms", True, 3)
    second, _ = engine_meta_gradient("conv4", "acdc-net", "atoms", False, 3)
    assert max_relative_error(first, second) > 1e-3
    model = build_model("conv4", "acdc-net", image_size=IMAGE_SIZE)
    theirs = REFERENCES[reference](model, episodes(), names, INNER_LR, 3, False)
    assert max_relative_error(first, theirs) > 1e-3


@pytest.mark.parametrize("backbone, conv, scope, first_order", [
    ("resnet10", "acdc-net", "atoms", False),
    ("conv4", "acdc-block", "all", True),
    ("conv4", "standard", "all", False),
    ("conv4", "acdc-net", "head", False),  # the support features computed once per task inside vmap too
])
def test_vmap_task_batching_matches_sequential(backbone, conv, scope, first_order):
    sequential, _ = engine_meta_gradient(backbone, conv, scope, first_order, 3)
    vmapped, _ = engine_meta_gradient(backbone, conv, scope, first_order, 3, task_batching="vmap")
    assert max_relative_error(vmapped, sequential) <= 1e-9
