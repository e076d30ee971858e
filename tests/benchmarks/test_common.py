"""Specification of benchmarks/common.py: the grid every benchmark sweeps, how a report is saved."""
import json
import shutil
import subprocess

import pytest

from benchmarks.common import configuration_grid, save_report, source_revision


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
    save_report({"rows": [1, 2], "source": {"git_commit": "abc"}}, str(path))
    assert json.loads(path.read_text()) == {"rows": [1, 2], "source": {"git_commit": "abc"}}


def test_a_saved_report_names_the_commit_of_the_code_it_measured(tmp_path):
    path = tmp_path / "report.json"
    save_report({"rows": []}, str(path))
    assert json.loads(path.read_text())["source"] == source_revision()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_source_revision_reads_the_commit_and_only_changes_to_measured_code(tmp_path):
    def git(*arguments):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *arguments], cwd=tmp_path, check=True,
                       capture_output=True)
    (tmp_path / "fewshot_acdc").mkdir()
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "fewshot_acdc" / "layer.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "results" / "old.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "measured code")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert source_revision(str(tmp_path)) == {"git_commit": commit, "uncommitted_changes": False}
    (tmp_path / "benchmarks" / "results" / "old.json").write_text('{"rerun": true}\n')  # a result, not code
    assert source_revision(str(tmp_path))["uncommitted_changes"] is False
    (tmp_path / "fewshot_acdc" / "layer.py").write_text("x = 2\n")
    assert source_revision(str(tmp_path))["uncommitted_changes"] is True


def test_outside_a_git_checkout_the_revision_is_unknown(tmp_path):
    assert source_revision(str(tmp_path)) == {"git_commit": None, "uncommitted_changes": None}
