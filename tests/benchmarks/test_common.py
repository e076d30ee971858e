"""Specification of benchmarks/common.py: the grid every benchmark sweeps."""
import json

from benchmarks.common import configuration_grid, save_report


def test_grid_is_the_product_in_order_without_standard_convs_on_a_partial_scope():
    grid = list(configuration_grid("resnet10,resnet18", "standard,acdc-net", "all,atoms", ["second"]))
    assert grid == [("resnet10", "standard", "all", "second"), ("resnet10", "acdc-net", "all", "second"),
                    ("resnet10", "acdc-net", "atoms", "second"), ("resnet18", "standard", "all", "second"),
                    ("resnet18", "acdc-net", "all", "second"), ("resnet18", "acdc-net", "atoms", "second")]


def test_grid_axes_of_conv_and_scope_can_be_placed_anywhere():
    grid = list(configuration_grid("84,224", "standard", "head,all", conv_axis=1, scope_axis=2))
    assert grid == [("84", "standard", "all"), ("224", "standard", "all")]


def test_save_report_creates_folders_and_writes_json(tmp_path):
    path = tmp_path / "new" / "report.json"
    save_report({"rows": [1, 2]}, str(path))
    assert json.loads(path.read_text()) == {"rows": [1, 2]}
