"""Specification of the BasisConv conversion command and of training the new conv kinds from the CLI."""
import json

import pytest
import torch

from fewshot_acdc.cli import convert as convert_cli
from fewshot_acdc.cli import train as train_cli
from fewshot_acdc.nn import BasisConv2d, convert_to_basisconv
from fewshot_acdc.runs.conversion import load_converted
from fewshot_acdc.runs.evaluation import load_trained
from fewshot_acdc.vocabulary import conv_kind

TINY = ["--dataset", "builtin", "--backbone", "conv4", "--image-size", "20",
        "--ways", "3", "--shots", "1", "--queries", "2", "--queries-eval", "2", "--inner-steps", "1",
        "--inner-steps-eval", "1", "--meta-batch", "2", "--iterations", "2", "--val-every", "2",
        "--val-episodes", "3", "--test-episodes", "4", "--device", "cpu", "--quiet", "--no-eval"]


@pytest.fixture(scope="module")
def standard_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    run = root / "run"
    assert train_cli.main(TINY + ["--acdc", "none", "--out", str(run), "--episode-dir", str(root / "episodes")]) == 0
    return run


def test_convert_writes_a_loadable_checkpoint_and_the_error_report(standard_run, capsys):
    assert convert_cli.main(["--run", str(standard_run), "--rank", "8", "--evaluate", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [layer["name"] for layer in result["layers"]] == ["blocks.1.0", "blocks.2.0", "blocks.3.0"]
    assert all(layer["rank"] == 8 and 0 < layer["relative_error"] < 1 for layer in result["layers"])
    assert result["trainable_after"] == 3 * 64 * 8 and result["fixed_after"] == 3 * 8 * 64 * 9
    assert set(result["evaluation"]) >= {"original", "converted"} and result["evaluation"]["original"]["episodes"] == 3
    output = standard_run / "basisconv" / "best-rank8.pt"
    assert result["output"] == str(output) and output.with_suffix(".json").is_file()
    # The saved model is the conversion of the trained checkpoint, with the same error.
    _, trained, _ = load_trained(standard_run, "best", torch.device("cpu"), 3)
    expected, report = convert_to_basisconv(trained, 8)
    config, converted, state = load_converted(output)
    assert state["ranks"] == report.ranks and config.conv == "standard"
    assert sum(isinstance(m, BasisConv2d) for m in converted.modules()) == 3
    images = torch.randn(4, 3, 20, 20)
    torch.testing.assert_close(converted(images), expected(images))
    assert result["total_relative_error"] == pytest.approx(report.total_relative_error)


def test_convert_by_energy_prints_a_table(standard_run, capsys):
    assert convert_cli.main(["--run", str(standard_run), "--energy", "0.5", "--checkpoint", "last"]) == 0
    out = capsys.readouterr().out
    assert "total relative reconstruction error" in out and "blocks.2.0" in out
    assert (standard_run / "basisconv" / "last-energy0.5.pt").is_file()


def test_convert_refuses_runs_that_are_not_standard_and_bad_requests(tmp_path, capsys):
    run = tmp_path / "acdc"
    assert train_cli.main(TINY + ["--acdc", "net", "--iterations", "1", "--val-every", "1", "--out", str(run),
                                  "--episode-dir", str(tmp_path / "episodes")]) == 0
    assert convert_cli.main(["--run", str(run), "--rank", "4"]) == 1
    assert "only standard-conv runs can be converted" in capsys.readouterr().err
    assert convert_cli.main(["--run", str(tmp_path / "missing"), "--rank", "4"]) == 1
    assert "not a run directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        convert_cli.main(["--run", str(run), "--rank", "4", "--energy", "0.9"])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("conv,adapt", [("basis", "combination"), ("dcf", "coefficients"), ("repeat-net", "scales")])
def test_train_each_new_kind_from_the_command_line(tmp_path, conv, adapt):
    run = tmp_path / "run"
    size_flag = "--" + conv_kind(conv).size_key.replace("_", "-")  # --rank, --bessel-atoms, --base-width
    assert train_cli.main(TINY + ["--conv", conv, size_flag, "4", "--adapt", adapt, "--iterations", "1",
                                  "--val-every", "1", "--out", str(run), "--episode-dir", str(tmp_path / "episodes")]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["conv"] == conv and summary["adapt"] == adapt and summary["size"] == 4
    assert 0 < summary["adapted_parameters"] < summary["total_parameters"]
    # The saved config resumes as the same kind.
    assert train_cli.main(["--resume", str(run), "--iterations", "2", "--quiet", "--no-eval"]) == 0
    assert json.loads((run / "summary.json").read_text())["conv"] == conv


def test_conflicting_conv_and_acdc_flags_are_an_error(capsys):
    with pytest.raises(SystemExit):
        train_cli.main(["--acdc", "block", "--conv", "basis"])
    assert "name different conv kinds" in capsys.readouterr().err


def test_default_run_directory_names_the_kind():
    from fewshot_acdc.config import load_config
    assert train_cli.default_run_dir(load_config(None, {"conv": "dcf"})).name.startswith("miniimagenet-resnet18-dcf-all")
    assert train_cli.default_run_dir(load_config(None, {"acdc": "net"})).name.startswith("miniimagenet-resnet18-net-all")
