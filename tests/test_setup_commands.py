"""Specification of scripts/with_env.sh, the set-up behind `make demo` and `make test`: pick the
active environment or ./.venv, install once, skip the install when a stamp says it is done, then
run the command in that environment.

The environments here are fake: their ``python`` records pip calls instead of installing (a
real install takes minutes), answers the learn2learn check as installed (importing it, torch
included, takes seconds per call) and runs everything else with this interpreter, which has the
packages, so the script's find_spec check sees a complete install.
"""
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def fake_python(path: Path, log: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> "{log}"\n'
        'if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then exit 0; fi\n'
        'case "$1" in */check_learn2learn.py) exit 0;; esac\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    path.chmod(0o755)
    return path


def with_env(*command: str, env: dict, timeout: int = 120) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV")}
    return subprocess.run(["bash", str(ROOT / "scripts" / "with_env.sh"), *command], capture_output=True,
                          text=True, env={**base, **env}, timeout=timeout)


def pip_calls(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("-m pip")] if log.exists() else []


def test_installs_into_the_active_virtualenv_once_then_only_runs(tmp_path):
    venv, log = tmp_path / "venv", tmp_path / "calls.log"
    fake_python(venv / "bin" / "python", log)
    command = ("python", "-c", "import os; print('ran in', os.environ['VIRTUAL_ENV'])")
    first = with_env(*command, env={"VIRTUAL_ENV": str(venv)})
    assert first.returncode == 0, first.stderr
    assert f"installing into the active virtualenv {venv}" in first.stdout
    assert f"ran in {venv}" in first.stdout
    calls = pip_calls(log)
    assert any("torch==2.14.1" in c and "torchvision==0.29.1" in c for c in calls)
    assert any("-e .[dev,reference]" in c for c in calls)
    assert (venv / ".fewshot-acdc-install").is_file()

    log.unlink()
    start = time.perf_counter()
    second = with_env(*command, env={"VIRTUAL_ENV": str(venv)})
    elapsed = time.perf_counter() - start
    assert second.returncode == 0 and f"ran in {venv}" in second.stdout
    assert "installing" not in second.stdout and pip_calls(log) == []
    assert elapsed < 10  # a find_spec check, not an install (generous for a loaded 2-core CI)


def test_a_stale_stamp_or_FEWSHOT_REINSTALL_installs_again(tmp_path):
    venv, log = tmp_path / "venv", tmp_path / "calls.log"
    fake_python(venv / "bin" / "python", log)
    assert with_env("true", env={"VIRTUAL_ENV": str(venv)}).returncode == 0
    (venv / ".fewshot-acdc-install").write_text("made from an older pyproject.toml\n")
    log.unlink()
    assert with_env("true", env={"VIRTUAL_ENV": str(venv)}).returncode == 0
    assert pip_calls(log)  # the key changed: install again
    log.unlink()
    assert with_env("true", env={"VIRTUAL_ENV": str(venv), "FEWSHOT_REINSTALL": "1"}).returncode == 0
    assert pip_calls(log)


def test_without_an_active_environment_it_creates_the_project_venv(tmp_path):
    venv, log = tmp_path / "project-venv", tmp_path / "calls.log"
    base = tmp_path / "base" / "python3"
    base.parent.mkdir()
    # `python3 -m venv DIR` makes DIR/bin/python; everything else goes to the real interpreter
    base.write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then\n'
        f'  mkdir -p "$3/bin" && cp "{fake_python(tmp_path / "template" / "python", log)}" "$3/bin/python"\n'
        "  exit 0\n"
        "fi\n"
        f'exec "{sys.executable}" "$@"\n'
    )
    base.chmod(0o755)
    result = with_env("python", "-c", "import os, sys; print('venv', os.environ['VIRTUAL_ENV'])",
                      env={"FEWSHOT_VENV": str(venv), "FEWSHOT_BASE_PYTHON": str(base)})
    assert result.returncode == 0, result.stderr
    assert f"creating the project virtualenv {venv}" in result.stdout
    assert f"venv {venv}" in result.stdout and (venv / ".fewshot-acdc-install").is_file()
    assert pip_calls(log)


def test_a_base_python_older_than_3_10_is_refused_by_name(tmp_path):
    old = tmp_path / "python3.8"
    old.write_text(
        "#!/usr/bin/env bash\n"
        'case "$2" in *version_info*) exit 1;; *platform*) echo 3.8.10;; esac\n'
    )
    old.chmod(0o755)
    result = with_env("true", env={"FEWSHOT_VENV": str(tmp_path / "venv"), "FEWSHOT_BASE_PYTHON": str(old)})
    assert result.returncode == 1 and not (tmp_path / "venv").exists()
    assert "Python 3.8.10" in result.stderr and "3.10 or newer" in result.stderr


@pytest.mark.slow
def test_installing_learn2learn_keeps_gyms_unmaintained_notice_out_of_the_output():
    # learn2learn imports gym, which prints a notice on every import; the install's check of
    # learn2learn (the last thing the install prints) must not pass it on.
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_learn2learn.py"), "0.2.0", "--report"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "learn2learn 0.2.0 installed\n"
    assert "unmaintained" not in result.stderr and "Gym" not in result.stderr



def test_the_learn2learn_check_fails_naming_the_version_it_found(capsys):
    spec = importlib.util.spec_from_file_location("check_learn2learn", ROOT / "scripts" / "check_learn2learn.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    assert check.main(["9.9", "--report"]) == 1
    assert "learn2learn 0.2.0 is installed, not 9.9" in capsys.readouterr().err
    assert check.main(["9.9"]) == 1 and capsys.readouterr().err == ""  # quiet unless asked
