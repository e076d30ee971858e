"""The engine's meta-gradient against learn2learn and higher for BasisConv, DCF and learnable repetition.

One tiny Conv4 per kind (float64, 16 px, base width/rank/atoms 4), adapting the kind's small part
(BasisConv's combination, DCF's coefficients, repetition's scales) and, for the network-shared
repetition base, every parameter. Fixed bases are buffers: they must get no gradient anywhere.
Same tolerance as tests/meta/test_maml_agreement.py.
"""
from __future__ import annotations

import pytest
import torch

from fewshot_acdc.meta import MAML
from fewshot_acdc.nn import ConvSpec
from .maml_references import REFERENCES
from .maml_testing import build_model, max_relative_error, random_episode

TOLERANCE = 1e-6
INNER_LR = 0.05
IMAGE_SIZE = 16

CASES = [
    ("basis", "combination", False),
    ("basis", "combination+head", True),
    ("dcf", "coefficients", False),
    ("repeat-net", "scales", False),
    ("repeat-net", "all", False),
    ("repeat-layer", "scales", True),
]


def episodes():
    return [random_episode(seed, image_size=IMAGE_SIZE) for seed in (21, 22)]


def model_for(conv):
    return build_model("conv4", ConvSpec(conv, 4), image_size=IMAGE_SIZE)


def engine_meta_gradient(conv, scope, first_order, steps=2):
    model = model_for(conv)
    maml = MAML(model, scope=scope, inner_lr=INNER_LR, inner_steps=steps, first_order=first_order)
    maml.meta_train_step(episodes(), torch.optim.SGD(model.parameters(), lr=0.0))
    assert all(buffer.grad is None for buffer in model.buffers())
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}, tuple(maml.adapted_names)


@pytest.mark.reference
@pytest.mark.parametrize("reference", sorted(REFERENCES))
@pytest.mark.parametrize("conv, scope, first_order", CASES,
                         ids=[f"{c}-{s}-{'first' if f else 'second'}" for c, s, f in CASES])
def test_meta_gradient_matches_reference(reference, conv, scope, first_order):
    ours, adapted_names = engine_meta_gradient(conv, scope, first_order)
    theirs = REFERENCES[reference](model_for(conv), episodes(), adapted_names, INNER_LR, 2, first_order)
    assert max_relative_error(ours, theirs) <= TOLERANCE


def test_vmap_task_batching_matches_sequential_with_fixed_bases():
    for conv, scope in (("basis", "combination"), ("dcf", "coefficients")):
        model = model_for(conv)
        gradients = []
        for batching in ("sequential", "vmap"):
            maml = MAML(model, scope=scope, inner_lr=INNER_LR, inner_steps=2, task_batching=batching)
            maml.meta_train_step(episodes(), torch.optim.SGD(model.parameters(), lr=0.0))
            gradients.append({name: p.grad.detach().clone() for name, p in model.named_parameters()})
        assert max_relative_error(gradients[1], gradients[0]) <= 1e-9


def test_inner_loop_changes_only_the_small_part():
    model = model_for("repeat-net")
    maml = MAML(model, scope="scales", inner_lr=INNER_LR, inner_steps=1)
    params = dict(model.named_parameters())
    from fewshot_acdc.meta.functional import inner_loop
    episode = episodes()[0]
    adapted, _ = inner_loop(model, params, maml.adapted_names, episode.support_images, episode.support_labels,
                            inner_lr=INNER_LR, steps=1, create_graph=False)
    changed = {name for name in params if adapted[name] is not params[name]}
    assert changed == set(maml.adapted_names) and all(name.endswith("scales") for name in changed)
