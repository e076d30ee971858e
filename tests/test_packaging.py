"""Specification of the install files: pyproject.toml, environment.yml, the README quickstart and CI."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda names some packages differently from PyPI.
CONDA_TO_PYPI = {"pytorch": "torch", "pyyaml": "pyyaml"}


def package_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pyproject_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {package_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        names |= {package_name(r) for r in extra}
    return names, project


def environment_packages():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    names = set()
    for entry in environment["dependencies"]:
        if isinstance(entry, dict):
            names |= {package_name(r) for r in entry["pip"] if not r.startswith("-e")}
        elif package_name(entry) not in ("python", "pip"):
            names.add(CONDA_TO_PYPI.get(package_name(entry), package_name(entry)))
    return names, environment


def test_environment_yml_and_pyproject_name_the_same_packages():
    assert environment_packages()[0] == pyproject_packages()[0]


def test_torch_pins_agree_everywhere():
    _, project = pyproject_packages()
    assert "torch==2.14.1" in project["dependencies"] and "torchvision==0.29.1" in project["dependencies"]
    environment = (ROOT / "environment.yml").read_text()
    assert "pytorch=2.14.1" in environment and "torchvision=0.29.1" in environment
    assert 'torch==2.14.1' in (ROOT / "scripts" / "install.sh").read_text()


def quickstart_commands():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", section, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_quickstart_is_install_run_test():
    commands = quickstart_commands()
    assert len(commands) == 3, commands
    install, run, test = commands
    assert install == "bash scripts/install.sh"
    assert run.startswith("python run_maml.py") and "builtin" in run
    assert test.startswith("python -m pytest")


def test_ci_runs_the_readme_install_and_test_commands():
    install, _, test = quickstart_commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert install in ci_lines
    assert test in ci_lines
    assert ci_lines.index(install) < ci_lines.index(test)
