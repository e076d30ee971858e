"""Specification of fewshot_acdc.nn.sharing: nested slices of shared coefficient tensors.

Backbones evaluate every shared-coefficient layer on one view per slice shape, each cut from the
next larger one. It must compute exactly what layers slicing the full tensor on their own compute
(values, gradients and second-order gradients), leave no view behind, and follow whatever tensor
the layers hold (functional_call substitutes included).
"""
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from fewshot_acdc.models import create_backbone
from fewshot_acdc.nn import ACDCConv2d
from fewshot_acdc.nn.sharing import SharedSlice, leading_slices, nested_coefficient_slices, nested_leading_slices


def test_each_view_is_the_leading_slice_cut_from_the_smallest_larger_view():
    shared = torch.arange(8 * 8 * 2, dtype=torch.float64).reshape(8, 8, 2)
    views = nested_leading_slices(shared, [(2, 2), (4, 2), (4, 4), (8, 4), (8, 8), (4, 4)])
    assert set(views) == {(2, 2), (4, 2), (4, 4), (8, 4), (8, 8)}
    for (rows, cols), view in views.items():
        torch.testing.assert_close(view, shared[:rows, :cols])
        assert view.data_ptr() == shared.data_ptr()  # views, no copies
    # The chain: gradients of a small slice are padded to the next larger view, not to 8x8.
    views = nested_leading_slices(shared.clone().requires_grad_(), [(2, 2), (4, 4), (8, 8)])
    node, chain = views[(2, 2)].grad_fn, []
    while node is not None and node.next_functions:
        chain.append(node)
        node = node.next_functions[0][0]
    assert views[(4, 4)].grad_fn in chain


def test_leading_slices_are_views_from_one_autograd_node():
    shared = torch.randn(8, 8, 2, requires_grad=True)
    views = leading_slices(shared, [(2, 2), (8, 4), (8, 8), (2, 2)])
    assert set(views) == {(2, 2), (8, 4), (8, 8)}
    for (rows, cols), view in views.items():
        torch.testing.assert_close(view, shared[:rows, :cols])
        assert view.data_ptr() == shared.data_ptr()
    assert len({view.grad_fn for view in views.values()}) == 1  # one backward for all shapes
    with torch.no_grad():  # nothing to differentiate: plain views
        assert all(view.grad_fn is None for view in leading_slices(shared, [(2, 2), (8, 8)]).values())


def test_leading_slices_gradients_equal_plain_slicing_to_third_order():
    """MAML differentiates through the inner loop's gradients: the backward of the slices
    (one full-size sum) and its backward (slicing again) are checked as well."""
    torch.manual_seed(3)
    shared = torch.randn(4, 5, 2, dtype=torch.float64, requires_grad=True)
    weights = {shape: torch.randn(*shape, 2, dtype=torch.float64) for shape in [(4, 5), (4, 3), (2, 3), (1, 1)]}

    def function(tensor, slicer):
        views = slicer(tensor, list(weights))
        # the (1, 1) slice is cut but unused: its gradient is None, not a zero tensor
        return sum((views[shape].sin() * weight).sum() for shape, weight in weights.items() if shape != (1, 1))

    def plain(tensor, shapes):
        return {shape: tensor[:shape[0], :shape[1]] for shape in shapes}

    assert torch.autograd.gradcheck(lambda tensor: function(tensor, leading_slices), (shared,))
    assert torch.autograd.gradgradcheck(lambda tensor: function(tensor, leading_slices), (shared,))
    results = []
    for slicer in (leading_slices, plain):
        (first,) = torch.autograd.grad(function(shared, slicer), shared, create_graph=True)
        (second,) = torch.autograd.grad(first.cos().sum(), shared, create_graph=True)
        (third,) = torch.autograd.grad(second.square().sum(), shared)
        results.append((first, second, third))
    for ours, reference in zip(*results):
        torch.testing.assert_close(ours, reference)


def test_leading_slices_under_vmap_are_cut_from_each_other():
    """torch.func transforms (the engine's vmap task batching) take the nested views."""
    shared = torch.randn(3, 4, 4, 2)

    def loss(tensor):
        views = leading_slices(tensor, [(2, 2), (4, 2)])
        return views[(2, 2)].square().sum() + views[(4, 2)].sum()

    batched = torch.func.vmap(torch.func.grad(loss))(shared)
    for index in range(3):
        expected = torch.zeros(4, 4, 2)
        expected[:2, :2] += 2 * shared[index, :2, :2]
        expected[:, :2] += 1
        torch.testing.assert_close(batched[index], expected)


def test_a_shared_slice_is_copied_at_most_once_and_only_when_asked():
    shared = torch.randn(8, 8, 2)
    shared_slice = SharedSlice(nested_leading_slices(shared, [(4, 4), (8, 8)])[(4, 4)])
    assert not shared_slice.view.is_contiguous() and shared_slice._contiguous is None
    copy = shared_slice.contiguous()
    assert copy.is_contiguous() and shared_slice.contiguous() is copy
    torch.testing.assert_close(copy, shared[:4, :4])


def test_layers_share_one_copy_per_shape_on_the_kernel_path_and_none_on_the_factored_path():
    model = create_backbone("resnet18", "acdc-net", atoms=2, image_size=16, track_running_stats=False)
    layers = [m for m in model.modules() if isinstance(m, ACDCConv2d) and m.coefficient_shape[:2] == (128, 128)]
    assert len(layers) >= 2
    slices = []
    hooks = [layer.register_forward_pre_hook(lambda module, args: slices.append(module.coefficient_view))
             for layer in layers]
    for layer in layers:
        layer.compute = "kernel"
    model(torch.randn(2, 3, 16, 16))
    assert all(shared_slice is slices[0] for shared_slice in slices)  # one SharedSlice for the shape
    assert slices[0]._contiguous is not None
    slices.clear()
    for layer in layers:
        layer.compute = "factored"
    model(torch.randn(2, 3, 16, 16))
    assert slices[0]._contiguous is None  # the factored path took the strided view as it is
    for hook in hooks:
        hook.remove()


def test_a_slice_larger_than_the_tensor_is_refused():
    for slicer in (nested_leading_slices, leading_slices):
        with pytest.raises(ValueError, match=r"slice \(9, 2\) does not fit"):
            slicer(torch.zeros(8, 8, 2, requires_grad=True), [(9, 2)])


def _logits_without_nesting(model, images):
    return model.head(model.features(images))  # Backbone.forward minus the nested-slice context


@pytest.mark.parametrize("conv", ["acdc-net", "acdc-block", "acdc-g-net"])
def test_backbone_gradients_to_second_order_equal_those_of_layers_slicing_on_their_own(conv):
    torch.manual_seed(0)
    group_size = 4 if conv == "acdc-g-net" else None
    model = create_backbone("resnet10", conv, atoms=3, group_size=group_size, image_size=16,
                            track_running_stats=False).double()
    images = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2])
    params = [p for p in model.parameters()]
    results = []
    for forward in (model, lambda x: _logits_without_nesting(model, x)):
        loss = F.cross_entropy(forward(images), labels)
        inner = torch.autograd.grad(loss, params, create_graph=True)
        outer = torch.autograd.grad(sum((g * g).sum() for g in inner), params)
        results.append(([g.detach() for g in inner], outer))
    for nested, plain in zip(*results):
        for a, b in zip(nested, plain):
            torch.testing.assert_close(a, b)


def test_views_are_set_only_during_the_forward_and_cleared_after_an_error():
    model = create_backbone("resnet10", "acdc-net", atoms=2, image_size=16, track_running_stats=False)
    layers = [m for m in model.modules() if isinstance(m, ACDCConv2d)]
    seen = []
    hook = layers[0].register_forward_pre_hook(lambda module, args: seen.append(module.coefficient_view))
    model(torch.randn(2, 3, 16, 16))
    assert seen and seen[0] is not None and seen[0].view.shape[:2] == layers[0].coefficient_shape[:2]
    assert all(layer.coefficient_view is None for layer in layers)
    hook.remove()
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 5, 16, 16))  # wrong channel count fails inside the forward
    assert all(layer.coefficient_view is None for layer in layers)
    assert "coefficient_view" not in dict(model.named_parameters())


def test_views_follow_functional_call_substitutes():
    torch.manual_seed(0)
    model = create_backbone("resnet10", "acdc-net", atoms=2, image_size=16, track_running_stats=False)
    images = torch.randn(2, 3, 16, 16)
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    params["coefficient_bank.net"] = params["coefficient_bank.net"] * 2
    with torch.no_grad():
        substituted = functional_call(model, params, (images,))
        model.coefficient_bank.net.mul_(2)
        direct = model(images)
    torch.testing.assert_close(substituted, direct)
