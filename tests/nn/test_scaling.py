"""Specification of fewshot_acdc.nn.scaling: per-parameter learning-rate scales that train ACDC
coefficients as if they were stored at the scale of the kernel they compose."""
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from fewshot_acdc.models import create_backbone
from fewshot_acdc.nn import ACDCConv2d
from fewshot_acdc.nn.scaling import coefficient_gammas, learning_rate_scales
from fewshot_acdc.runs.builders import make_optimizer


def test_resnet18_acdc_net_gamma_is_the_geometric_mean_over_its_body_convolutions():
    model = create_backbone("resnet18", conv="acdc-net", atoms=8, num_classes=5, image_size=28, in_channels=1,
                            track_running_stats=False)
    # The 3x3 body convolutions of ResNet18 by input channels (the stem and 1x1 shortcuts stay standard):
    # stage1 4 x 64; stage2 64 then 3 x 128; stage3 128 then 3 x 256; stage4 256 then 3 x 512.
    inputs = [64] * 4 + [64] + [128] * 3 + [128] + [256] * 3 + [256] + [512] * 3
    log_sigma = sum(0.5 * math.log(2.0 / (c * 9)) for c in inputs) / len(inputs)
    assert coefficient_gammas(model) == {"coefficient_bank.net": pytest.approx(1 / (math.sqrt(8) * math.exp(log_sigma)))}
    adam = learning_rate_scales(model, "kernel", "adam")
    assert adam == learning_rate_scales(model, "kernel", "adamw") == coefficient_gammas(model)
    assert learning_rate_scales(model, "kernel", "sgd") == {}  # SGD's step already follows the gradient
    assert 8 < adam["coefficient_bank.net"] < 12  # between the first stage's 6x and the last's 17x


def test_every_layer_of_acdc_layer_gets_its_own_gamma_and_standard_convs_none():
    model = create_backbone("conv4", conv="acdc-layer", atoms=4, num_classes=5, image_size=28, in_channels=1,
                            track_running_stats=False)
    gammas = coefficient_gammas(model)
    layers = [m for m in model.modules() if isinstance(m, ACDCConv2d)]
    assert len(gammas) == len(layers) == 3  # Conv4's stem stays standard
    for layer in layers:
        assert any(g == pytest.approx(1 / (2 * math.sqrt(2.0 / layer.fan_in))) for g in gammas.values())
    standard = create_backbone("conv4", conv="standard", num_classes=5, image_size=28, in_channels=1,
                               track_running_stats=False)
    assert learning_rate_scales(standard, "kernel", "adam") == {}
    assert learning_rate_scales(model, "none", "adam") == {}
    with pytest.raises(ValueError, match="not one of none, kernel"):
        learning_rate_scales(model, "Kernel", "adam")


class Scaled(nn.Module):
    def __init__(self, gamma: float) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        return self.gamma * stored


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_scaled_rates_train_as_coefficients_stored_gamma_times_smaller(optimizer):
    # The independent implementation: torch's parametrize stores q = A / gamma and the layer uses
    # gamma * q, trained at the base rate. The scaled rates must follow the same trajectory.
    torch.manual_seed(0)
    scaled = ACDCConv2d(16, 16, 3, padding=1, atoms=4).double()
    stored = ACDCConv2d(16, 16, 3, padding=1, atoms=4).double()
    plain = ACDCConv2d(16, 16, 3, padding=1, atoms=4).double()
    stored.load_state_dict(scaled.state_dict())
    plain.load_state_dict(scaled.state_dict())
    [gamma] = coefficient_gammas(scaled).values()
    with torch.no_grad():
        stored.coefficients.div_(gamma)
    parametrize.register_parametrization(stored, "coefficients", Scaled(gamma))
    decay = 0.05 if optimizer == "adamw" else 0.0  # AdamW's decoupled decay: the same fraction per step
    optimizers = [make_optimizer(optimizer, dict(scaled.named_parameters()), 0.01, decay, 0.9,
                                 learning_rate_scales(scaled, "kernel", optimizer)),
                  make_optimizer(optimizer, dict(stored.named_parameters()), 0.01, decay, 0.9, {}),
                  make_optimizer(optimizer, dict(plain.named_parameters()), 0.01, decay, 0.9, {})]
    images = torch.randn(4, 16, 6, 6, dtype=torch.float64)
    target = torch.randn(4, 16, 6, 6, dtype=torch.float64)
    for _ in range(5):
        for layer, opt in zip((scaled, stored, plain), optimizers):
            opt.zero_grad()
            ((layer(images) - target) ** 2).mean().backward()
            opt.step()
    # Equal up to Adam's epsilon, which the rescaled gradient meets gamma times larger.
    tolerance = 1e-3
    difference = (scaled.kernel() - stored.kernel()).abs().max() / stored.kernel().abs().max()
    assert difference < tolerance
    assert (plain.kernel() - stored.kernel()).abs().max() / stored.kernel().abs().max() > 30 * tolerance


def test_a_changed_base_rate_keeps_the_ratios():
    from fewshot_acdc.runs.resume import apply_changes
    model = create_backbone("conv4", conv="acdc-net", atoms=4, num_classes=5, image_size=28, in_channels=1,
                            track_running_stats=False)
    scales = learning_rate_scales(model, "kernel", "adam")
    optimizer = make_optimizer("adam", dict(model.named_parameters()), 1e-3, 0.0, 0.9, scales)
    apply_changes([{"key": "meta_lr", "from": 1e-3, "to": 2e-3, "from_iteration": 1}], optimizer)
    assert sorted(group["lr"] for group in optimizer.param_groups) == pytest.approx(
        sorted([2e-3] + [2e-3 * s for s in scales.values()]))
