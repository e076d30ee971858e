"""Specification of fewshot_acdc.meta.batchnorm: MAML's batch-statistics BatchNorm policy and the
elementary-op BatchNorm used under vmap (second-order correctness is checked end to end in
test_maml_engine.py; here the function itself)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fewshot_acdc.meta.batchnorm import (DecomposedBatchNorm, batch_statistics_norm, check_no_running_stats,
                                         modules_with_running_stats)


@pytest.mark.parametrize("shape", [(6, 4, 5, 5), (7, 3)])
@pytest.mark.parametrize("affine", [True, False])
def test_elementary_batch_norm_equals_torchs_in_training_mode(shape, affine):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=generator, dtype=torch.float64) * 3 + 1
    channels = shape[1]
    weight = torch.randn(channels, generator=generator, dtype=torch.float64) if affine else None
    bias = torch.randn(channels, generator=generator, dtype=torch.float64) if affine else None
    expected = F.batch_norm(x, None, None, weight, bias, training=True, eps=1e-5)
    torch.testing.assert_close(batch_statistics_norm(x, weight, bias, 1e-5), expected, rtol=1e-12, atol=1e-12)


def test_its_second_derivative_equals_torchs():
    # what the vmap workaround exists for: a correct double backward through the BN weight
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, 4, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, generator=generator, dtype=torch.float64, requires_grad=True)

    def hessian_vector(norm):
        out = norm(x, weight)
        (g_weight,) = torch.autograd.grad((out ** 3).sum(), weight, create_graph=True)
        return torch.autograd.grad(g_weight.square().sum(), (x, weight))

    ours = hessian_vector(lambda x, w: batch_statistics_norm(x, w, None, 1e-5))
    torchs = hessian_vector(lambda x, w: F.batch_norm(x, None, None, w, None, training=True, eps=1e-5))
    for a, b in zip(ours, torchs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_the_mode_replaces_batch_statistics_calls_and_passes_running_statistics_through(monkeypatch):
    x = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    running_mean, running_var = torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([2.0, 0.5], dtype=torch.float64)
    calls = []
    monkeypatch.setattr("fewshot_acdc.meta.batchnorm.batch_statistics_norm",
                        lambda *args: calls.append(args) or batch_statistics_norm(*args))
    with DecomposedBatchNorm():
        batch = F.batch_norm(x, None, None, training=True)
        running = F.batch_norm(x, running_mean, running_var, training=False)
    assert len(calls) == 1, "only the batch-statistics call is decomposed"
    torch.testing.assert_close(batch, F.batch_norm(x, None, None, training=True))
    torch.testing.assert_close(running, (x - running_mean.view(1, 2, 1, 1)) / torch.sqrt(running_var.view(1, 2, 1, 1) + 1e-5))


def test_models_whose_norm_layers_track_running_statistics_are_refused_by_name():
    model = nn.Sequential(*[nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)) for _ in range(5)])
    assert modules_with_running_stats(model) == [f"{i}.1" for i in range(5)]
    with pytest.raises(ValueError, match=r"0\.1, 1\.1, 2\.1 and 2 more track them.*track_running_stats=False"):
        check_no_running_stats(model)
    check_no_running_stats(nn.Sequential(nn.BatchNorm2d(1, track_running_stats=False)))
