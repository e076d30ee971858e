"""Specification of fewshot_acdc.models: every backbone with every conv kind."""
import pytest
import torch

from fewshot_acdc.models import create_backbone, list_backbones
from fewshot_acdc.nn import CONV_KINDS, ACDCConv2d, ConvSpec

FEW_SHOT_RESNETS = ("resnet10", "resnet18", "resnet34")


def group_size_for(kind):
    return 32 if kind.startswith("acdc-g-") else None


def check_forward_and_gradients(model, images, num_classes):
    logits = model(images)
    assert logits.shape == (images.shape[0], num_classes)
    assert torch.isfinite(logits).all()
    logits.logsumexp(1).sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no (finite) gradient for {missing}"
    assert all(p.grad.abs().sum() > 0 for name, p in model.named_parameters() if not name.endswith("bias")), \
        "a weight received an all-zero gradient"


@pytest.mark.parametrize("kind", CONV_KINDS)
@pytest.mark.parametrize("name", FEW_SHOT_RESNETS)
@pytest.mark.parametrize("image_size", [84, 224])
def test_few_shot_resnets_forward_and_backward(name, kind, image_size):
    torch.manual_seed(0)
    # No atom-drop here: a forward that drops every atom of a layer (probability p^m) would
    # legitimately leave that layer without gradient; atom-drop has its own tests in tests/nn.
    model = create_backbone(name, ConvSpec(kind, 4, group_size_for(kind)), num_classes=5)
    check_forward_and_gradients(model, torch.randn(2, 3, image_size, image_size), 5)


@pytest.mark.parametrize("kind", CONV_KINDS)
@pytest.mark.parametrize("image_size,channels", [(28, 1), (84, 3)])
def test_conv4_forward_and_backward(kind, image_size, channels):
    torch.manual_seed(0)
    model = create_backbone("conv4", ConvSpec(kind, 4, group_size_for(kind)), num_classes=5,
                            in_channels=channels, image_size=image_size)
    check_forward_and_gradients(model, torch.randn(3, channels, image_size, image_size), 5)
    assert model.feature_dim == {28: 64, 84: 64 * 5 * 5}[image_size]


@pytest.mark.parametrize("kind", ["standard", "acdc-net", "acdc-block", "acdc-g-layer"])
@pytest.mark.parametrize("name", ["resnet18-cifar", "vgg16", "wrn-40-4"])
def test_classification_backbones_forward_and_backward(name, kind):
    torch.manual_seed(0)
    model = create_backbone(name, ConvSpec(kind, 4, group_size_for(kind)), num_classes=10)
    check_forward_and_gradients(model, torch.randn(2, 3, 32, 32), 10)


def test_depths_match_a_closer_look():
    def count(name):
        model = create_backbone(name, "acdc-layer")
        return sum(isinstance(m, ACDCConv2d) for m in model.modules())
    # BasicBlocks [1,1,1,1], [2,2,2,2], [3,4,6,3], two 3x3 convs each (the stem is not counted).
    assert (count("resnet10"), count("resnet18"), count("resnet34")) == (8, 16, 32)


def test_standard_resnet18_has_the_torchvision_parameter_count():
    torchvision = pytest.importorskip("torchvision")
    ours = create_backbone("resnet18", "standard", num_classes=1000)
    reference = torchvision.models.resnet18(num_classes=1000)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())


def test_maml_backbones_use_batch_statistics_and_have_no_running_buffers():
    model = create_backbone("resnet10", "acdc-net", track_running_stats=False)
    assert len(list(model.buffers())) == 0
    model.eval()
    images = torch.randn(4, 3, 84, 84)
    # eval() still normalizes with the batch's statistics: the output depends on the batch.
    alone = model(images[:2])
    together = model(images)[:2]
    assert not torch.allclose(alone, together)


def test_unknown_backbone_is_a_value_error_naming_the_closest():
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet19' \(did you mean 'resnet18'\?\).*accepted: conv4"):
        create_backbone("resnet19")


def test_unknown_conv_kind_is_a_value_error():
    with pytest.raises(ValueError, match="unknown conv kind 'acdc'"):
        create_backbone("resnet10", "acdc")


def test_conv4_refuses_images_of_another_size_than_it_was_built_for():
    model = create_backbone("conv4", image_size=84)
    with pytest.raises(ValueError, match="built for 84 px"):
        model(torch.randn(2, 3, 32, 32))


def test_registry_lists_every_backbone():
    assert list_backbones() == sorted(["conv4", "resnet10", "resnet18", "resnet34", "resnet18-cifar", "vgg16", "wrn-40-4"])


def test_the_registry_holds_exactly_the_backbones_the_vocabulary_names():
    # the config validates backbone names without importing torch, from fewshot_acdc.vocabulary
    from fewshot_acdc.vocabulary import BACKBONES
    assert sorted(BACKBONES) == list_backbones()
