"""Specification of ``python -m fewshot_acdc.analysis``: thin over the functions, one-line errors."""
import subprocess
import sys

from fewshot_acdc.analysis.__main__ import main


def test_each_command_writes_its_files_and_names_them(acdc_run, standard_run, tmp_path, capsys):
    assert main(["atoms", "--run", str(acdc_run), "--out", str(tmp_path / "atoms")]) == 0
    assert main(["coefficients", "--run", str(standard_run), "--out", str(tmp_path / "coef"), "--episodes", "3",
                 "--format", "svg"]) == 0
    printed = capsys.readouterr().out
    for name in ("atoms.png", "atoms.csv", "atoms.json", "coefficients.svg", "coefficients.csv", "coefficients.json"):
        assert name in printed
        assert any(path.name == name for path in tmp_path.rglob(name))


def test_a_bad_layer_is_one_line_with_the_choices_and_exit_code_1(standard_run, tmp_path, capsys):
    code = main(["coefficients", "--run", str(standard_run), "--out", str(tmp_path), "--layers", "blocks.9"])
    error = capsys.readouterr().err
    assert code == 1 and error.count("\n") == 1
    assert "blocks.9" in error and "blocks.0.0, blocks.1.0, blocks.2.0, blocks.3.0" in error


def test_the_module_runs_as_a_program():
    result = subprocess.run([sys.executable, "-m", "fewshot_acdc.analysis", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("atoms", "coefficients", "cam", "adaptation"):
        assert command in result.stdout
