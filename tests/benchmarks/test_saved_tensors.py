"""Specification of benchmarks/saved_tensors.py: which bytes count as held by a graph."""
import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "saved_tensors.py"
spec = importlib.util.spec_from_file_location("saved_tensors_benchmark", SCRIPT)
saved_tensors = importlib.util.module_from_spec(spec)
spec.loader.exec_module(saved_tensors)


def test_each_saved_storage_counts_once_under_the_op_that_keeps_it():
    features = torch.randn(100, requires_grad=True)
    exponential = features.exp()  # ExpBackward0 keeps its result: 400 bytes
    loss = (exponential * exponential).sum()  # MulBackward0 keeps the same storage twice
    by_op = saved_tensors.graph_saved_bytes(loss)
    assert sum(by_op.values()) == 400


def test_parameters_are_excluded_and_custom_function_inputs_are_counted():
    weight = torch.nn.Parameter(torch.randn(10, 20))
    features = torch.randn(5, 10, requires_grad=True)
    hidden = features @ weight  # MmBackward0 keeps features (200 B) and the weight (excluded)

    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, value):
            ctx.save_for_backward(value)
            return value * value

        @staticmethod
        def backward(ctx, grad):
            (value,) = ctx.saved_tensors
            return 2 * value * grad

    loss = Square.apply(hidden).sum()  # keeps hidden: 5 * 20 * 4 = 400 B
    by_op = saved_tensors.graph_saved_bytes(loss, exclude=[weight])
    assert by_op["MmBackward0"] == 200
    assert sum(by_op.values()) == 600


def test_a_meta_step_graph_holds_more_in_second_order_than_in_first():
    first = saved_tensors.measure("resnet10", "acdc-net", "all", "first", 16, inner_steps=2, queries=2)
    second = saved_tensors.measure("resnet10", "acdc-net", "all", "second", 16, inner_steps=2, queries=2)
    assert second["saved_mb"] > first["saved_mb"] > 0
    assert abs(sum(second["by_op_mb"].values()) - second["saved_mb"]) < 1e-9
