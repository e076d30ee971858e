"""Specification of the nn package's layout: layers apart from their tensor functions (nn.ops),
private torch calls in one shim, model surgery out of the layer files (no import cycle)."""
import ast
from pathlib import Path

from fewshot_acdc.nn import ACDCConv2d, BasisConv2d, DCFConv2d, DecomposedConv2d, RepeatedConv2d

NN = Path(__file__).resolve().parents[2] / "fewshot_acdc" / "nn"
SHIM = NN / "ops" / "_torch_private.py"


def relative_imports(path: Path):
    tree = ast.parse(path.read_text())
    return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level and node.module}


def test_private_torch_calls_are_made_in_the_shim_only():
    offenders = [str(path.relative_to(NN)) for path in NN.rglob("*.py")
                 if path != SHIM and "torch._C" in path.read_text().replace("``torch._C``", "")]
    assert offenders == []


def test_the_ops_import_no_layer_and_the_layer_files_no_factory():
    for path in (NN / "ops").glob("*.py"):
        assert all(module in ("autograd", "factored", "kernel", "paths", "_torch_private")
                   for module in relative_imports(path)), path.name
    for layer in ("acdc.py", "basis.py", "dcf.py", "repetition.py", "decomposed.py"):
        assert not {"factory", "conversion"} & relative_imports(NN / layer), layer


def test_every_decomposed_layer_shares_the_base():
    for layer in (ACDCConv2d, BasisConv2d, DCFConv2d, RepeatedConv2d):
        assert issubclass(layer, DecomposedConv2d)


def test_names_that_moved_are_still_served_where_they_were():
    from fewshot_acdc.nn import acdc, basis, ops
    assert acdc.compose_kernel is ops.compose_kernel and acdc.coefficient_product is ops.coefficient_product
    assert not hasattr(basis, "convert_to_basisconv"), "model surgery lives in nn/conversion, not in the layer file"
