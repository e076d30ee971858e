"""Specification of benchmarks/precision.py: what runs in bfloat16 and what the errors compare."""
import importlib.util
from pathlib import Path

import torch

from fewshot_acdc.models import create_backbone
from fewshot_acdc.nn import ACDCConv2d

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "precision.py"
spec = importlib.util.spec_from_file_location("precision_benchmark", SCRIPT)
precision = importlib.util.module_from_spec(spec)
spec.loader.exec_module(precision)


def test_autocast_forward_runs_convolutions_in_bfloat16_also_through_functional_call():
    model = create_backbone("conv4", "acdc-net", image_size=16, track_running_stats=False)
    precision.autocast_forward(model, "cpu")
    conv_dtypes = []
    for module in model.modules():
        if isinstance(module, ACDCConv2d):
            module.register_forward_hook(lambda layer, inputs, output: conv_dtypes.append(output.dtype))
    params = dict(model.named_parameters())
    logits = torch.func.functional_call(model, params, (torch.randn(2, 3, 16, 16),))
    assert logits.dtype == torch.float32
    assert conv_dtypes and set(conv_dtypes) == {torch.bfloat16}


def test_float32_is_closer_to_float64_than_bfloat16_on_a_small_model():
    row = precision.compare({"backbone": "conv4", "conv": "acdc-net", "scope": "all", "order": "second",
                             "image_size": 16, "queries": 2, "inner_steps": 1, "inner_lr": 0.01},
                            torch.device("cpu"))
    assert row["float32"]["relative_error"] < 1e-3 < row["bfloat16-autocast"]["relative_error"]
    assert row["float32"]["cosine"] > 0.999999
