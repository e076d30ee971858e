"""A linear classifier whose one-step MAML meta-gradients are worked out by hand.

Model: logits ``z = W x`` with ``W`` 2x2, starting at ``W0 = 0``; 2-way episode whose support and
query sets are both ``{(e1, class 0), (e2, class 1)}``; inner learning rate ``a``; one step.

* Support gradient at ``W0``: every softmax is uniform, ``p = (1/2, 1/2)``, so
  ``G = 1/2 [(p - e_0) e1^T + (p - e_1) e2^T] = [[-1/4, 1/4], [1/4, -1/4]] = M / 4`` with
  ``M = [[-1, 1], [1, -1]]``, and ``W1 = W0 - a G = -a M / 4``.
* At ``W1`` the logits of ``e1`` are ``(a/4, -a/4)``: ``p = (s, 1 - s)`` with ``s = sigmoid(a/2)``,
  the mirror image for ``e2``; query gradient ``g1 = (1 - s)/2 * M``, query loss ``-log s``.
* First order: the meta-gradient is ``g1``.
* Second order: ``(I - a H0) g1`` with ``H0`` the support Hessian at ``W0``. For a linear model,
  ``H0[V] = 1/2 sum_i (diag(p_i) - p_i p_i^T) V x_i x_i^T = 1/2 A V`` with ``A = -M / 4`` (uniform
  ``p``) and ``x_i`` the basis; ``M M = -2 M`` gives ``H0[M] = M / 4``, so the meta-gradient is
  ``(1 - a/4) (1 - s)/2 * M``.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fewshot_acdc.meta import MAML, Episode

M = torch.tensor([[-1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)


class LinearClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(2, 2, bias=False).double()
        nn.init.zeros_(self.head.weight)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(images.flatten(1))


def basis_episode() -> Episode:
    images = torch.eye(2, dtype=torch.float64).reshape(2, 2, 1, 1)  # e1, e2 as 2-channel 1x1 images
    labels = torch.tensor([0, 1])
    return Episode(images, labels, images.clone(), labels.clone())


@pytest.mark.parametrize("inner_lr", [0.5, 2.0])
@pytest.mark.parametrize("first_order", [False, True])
def test_one_step_meta_gradient_equals_the_hand_derivation(first_order, inner_lr):
    model = LinearClassifier()
    maml = MAML(model, scope="all", inner_lr=inner_lr, inner_steps=1, first_order=first_order)
    stats = maml.meta_train_step([basis_episode()], torch.optim.SGD(model.parameters(), lr=0.0))
    s = 1.0 / (1.0 + math.exp(-inner_lr / 2))
    query_gradient = (1 - s) / 2 * M
    expected = query_gradient if first_order else (1 - inner_lr / 4) * query_gradient
    torch.testing.assert_close(model.head.weight.grad, expected, rtol=1e-14, atol=1e-16)
    assert stats["meta_loss"] == pytest.approx(-math.log(s), rel=1e-14)
    assert stats["accuracy"] == 1.0
    assert stats["support_loss"] == pytest.approx(math.log(2.0), rel=1e-15)


def test_the_adapted_weights_equal_the_hand_derivation():
    model = LinearClassifier()
    inner_lr = 0.5
    maml = MAML(model, scope="head", inner_lr=inner_lr, inner_steps=1)
    episode = basis_episode()
    adapted = maml.adapt(maml.parameters(), episode.support_images, episode.support_labels)
    torch.testing.assert_close(adapted["head.weight"], -inner_lr * M / 4, rtol=0.0, atol=1e-16)
    assert torch.equal(model.head.weight, torch.zeros(2, 2, dtype=torch.float64))  # the model is untouched
