"""Specification of the install files: pyproject.toml, environment.yml, the README quickstart and CI."""
import re
import tomllib
from pathlib import Path

import pytest
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


def make_recipe(target: str) -> str:
    """The command line of a Makefile target (one-line recipes, as this Makefile has)."""
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{target}:.*\n\t@?(.+)$", makefile, flags=re.M)
    assert match, f"no '{target}' target in the Makefile"
    return match.group(1).strip()


@pytest.mark.docs
def test_readme_quickstart_is_two_commands_that_set_themselves_up():
    # Issue 17: install, main job and tests were three commands (plus an unshown venv).
    assert quickstart_commands() == ["make demo", "bash scripts/with_env.sh python -m pytest -q"]
    demo, test = make_recipe("demo"), make_recipe("test")
    assert demo.startswith("bash scripts/with_env.sh python run_maml.py --config ") and "builtin" in demo
    # `make test` is the README's test command with its default arguments
    assert test == "bash scripts/with_env.sh python -m pytest $(PYTEST_ARGS)"
    assert re.search(r"^PYTEST_ARGS \?= -q$", (ROOT / "Makefile").read_text(), flags=re.M)
    assert "scripts/install.sh" in (ROOT / "scripts" / "with_env.sh").read_text()


@pytest.mark.docs
def test_ci_runs_the_readme_test_command_and_installs_through_it():
    _, test = quickstart_commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert ci_lines[-1] == test
    # No install of its own: the test command creates or reuses the environment, as for a user.
    assert not [line for line in ci_lines if re.search(r"\bpip\b|install", line)]


def test_the_install_stamp_covers_every_file_that_decides_what_is_installed():
    with_env = (ROOT / "scripts" / "with_env.sh").read_text()
    inputs = re.search(r"for f in (.+?); do", with_env).group(1).split()
    called = set(re.findall(r"scripts/[\w.]+", (ROOT / "scripts" / "install.sh").read_text()))
    called |= {f"scripts/{name}" for name in re.findall(r'\$here/([\w.]+)',
                                                         (ROOT / "scripts" / "install_learn2learn.sh").read_text())}
    assert {"pyproject.toml", "scripts/install.sh"} | called <= set(inputs)
