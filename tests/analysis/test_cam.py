"""Specification of the multi-layer CAM: the last layer's class weights applied at every depth."""
import json

import numpy as np
import pytest
import torch

from fewshot_acdc.analysis import AnalysisError, class_activation_maps, class_channel_weights, run_cam
from fewshot_acdc.models import create_backbone


def test_each_map_is_the_class_weighted_sum_of_that_layers_channels():
    torch.manual_seed(0)
    model = create_backbone("conv4", "acdc-net", atoms=4, num_classes=3, image_size=16, track_running_stats=False)
    model.eval()
    params = {name: p.detach() for name, p in model.named_parameters()}
    images = torch.randn(2, 3, 16, 16)
    classes = torch.tensor([2, 0])
    cams = class_activation_maps(model, params, images, classes)
    # By hand: run the blocks one by one, keep each conv's output, weight its channels in numpy.
    features, x = [], images
    with torch.no_grad():
        for block in model.blocks:
            x = block[0](x)
            features.append(x.double().numpy())
            x = block[3](block[2](block[1](x)))
    head = model.head.weight.detach().double().numpy()  # (3, 64 * 1 * 1): 16 px leave a 1x1 map
    assert [cam.layer for cam in cams] == ["blocks.0.0", "blocks.1.0", "blocks.2.0", "blocks.3.0"]
    for cam, maps in zip(cams, features):
        assert tuple(cam.maps.shape) == (2,) + maps.shape[2:]
        for image, cls in enumerate(classes.tolist()):
            expected = np.zeros(maps.shape[2:])
            for channel in range(maps.shape[1]):
                expected += head[cls, channel] * maps[image, channel]
            np.testing.assert_allclose(cam.maps[image].double().numpy(), expected, rtol=1e-4, atol=1e-5)


def test_a_flattened_head_contributes_the_sum_of_its_per_position_weights():
    weight = torch.arange(2 * 3 * 4, dtype=torch.float64).reshape(2, 12)  # 2 classes, 3 channels x 4 positions
    np.testing.assert_array_equal(class_channel_weights(weight, 3).numpy(),
                                  weight.reshape(2, 3, 4).sum(-1).numpy())
    with pytest.raises(AnalysisError, match="not a multiple"):
        class_channel_weights(weight, 5)


def test_unknown_layers_and_mismatched_classes_are_refused():
    model = create_backbone("conv4", "standard", num_classes=3, image_size=16, track_running_stats=False)
    params = dict(model.named_parameters())
    images = torch.randn(2, 3, 16, 16)
    with pytest.raises(AnalysisError, match="blocks.0.0, blocks.1.0"):
        class_activation_maps(model, params, images, torch.tensor([0, 1]), layers=["head"])
    with pytest.raises(AnalysisError, match="one class per image"):
        class_activation_maps(model, params, images, torch.tensor([0]))


def test_run_cam_puts_standard_and_acdc_side_by_side(acdc_run, standard_run, tmp_path):
    paths = run_cam([standard_run, acdc_run], tmp_path / "out", images=3)
    assert paths["figure"].stat().st_size > 0
    record = json.loads(paths["json"].read_text())
    assert [entry["conv"] for entry in record["runs"]] == ["standard", "acdc-net"]
    assert sorted(record["labels"]) == [0, 1, 2]  # one query image of each class first
    for entry in record["runs"]:
        assert [np.array(layer["maps"]).shape for layer in entry["layers"]] == [(3, 16, 16), (3, 8, 8), (3, 4, 4),
                                                                                 (3, 2, 2)]
        assert len(entry["predictions"]) == 3
