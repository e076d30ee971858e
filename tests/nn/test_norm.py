"""Specification of fewshot_acdc.nn.norm: MAML++'s per-step BatchNorm (weights and running
statistics per inner step), checked against torch's BatchNorm computed by hand."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fewshot_acdc.nn import PerStepBatchNorm2d, inner_step, parameter_roles, use_per_step_batchnorm
from fewshot_acdc.models import create_backbone


def test_each_step_uses_its_own_weights_and_batch_statistics_in_training():
    layer = PerStepBatchNorm2d(3, steps=2)
    with torch.no_grad():
        layer.weight[1].fill_(2.0)
        layer.bias[1].fill_(-1.0)
    x = torch.randn(4, 3, 5, 5)
    reference = F.batch_norm(x, None, None, training=True)
    torch.testing.assert_close(layer(x), reference)                  # outside inner_step: step 0
    with inner_step(1):
        torch.testing.assert_close(layer(x), 2 * reference - 1)
    with inner_step(7):                                              # beyond the trained steps: the last
        torch.testing.assert_close(layer(x), 2 * reference - 1)


def test_running_statistics_are_kept_per_step_and_used_in_eval():
    layer = PerStepBatchNorm2d(3, steps=2, momentum=0.5)
    x = torch.randn(6, 3, 4, 4) * 3 + 1
    with inner_step(1):
        layer(x)
    torch.testing.assert_close(layer.running_mean[0], torch.zeros(3))  # step 0 untouched
    torch.testing.assert_close(layer.running_mean[1], 0.5 * x.mean((0, 2, 3)))
    torch.testing.assert_close(layer.running_var[1], 0.5 + 0.5 * x.var((0, 2, 3), unbiased=True))
    layer.eval()
    y = torch.randn(2, 3, 4, 4)
    with inner_step(1):
        expected = (y - layer.running_mean[1].view(1, 3, 1, 1)) / torch.sqrt(layer.running_var[1].view(1, 3, 1, 1) + 1e-5)
        torch.testing.assert_close(layer(y), expected)  # not transductive: y's own statistics do not enter
        torch.testing.assert_close(layer(y[:1]), expected[:1])


def test_conversion_keeps_the_function_and_gives_norm_roles():
    model = create_backbone("conv4", "acdc-net", image_size=16, track_running_stats=False)
    x = torch.randn(5, 3, 16, 16)
    before = model(x)
    use_per_step_batchnorm(model, steps=3)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    layers = [m for m in model.modules() if isinstance(m, PerStepBatchNorm2d)]
    assert layers and all(m.weight.shape == (3, m.num_features) for m in layers)
    torch.testing.assert_close(model(x), before)
    roles = parameter_roles(model)
    assert {roles[name] for name, p in model.named_parameters() if p.dim() == 2 and "weight" in name
            and "head" not in name and p.shape[0] == 3} == {"norm"}


def test_refused_under_vmap_and_recorded_by_maml():
    from fewshot_acdc.meta import MAML
    model = use_per_step_batchnorm(create_backbone("conv4", "acdc-net", image_size=16, track_running_stats=False), 2)
    assert MAML(model, inner_steps=2).batchnorm == "per-step"
    with pytest.raises(ValueError, match="task_batching='sequential'"):
        MAML(model, inner_steps=2, task_batching="vmap")
    plain = create_backbone("conv4", "acdc-net", image_size=16, track_running_stats=False)
    assert MAML(plain).batchnorm == "transductive"
