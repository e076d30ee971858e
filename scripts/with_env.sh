#!/usr/bin/env bash
# Usage: bash scripts/with_env.sh COMMAND [ARG...]
#
# Makes sure this project is installed in a Python environment, then runs COMMAND in it. This is
# what `make demo` and `make test` run, so each of them works on a fresh machine by itself.
#
# Which environment:
#   * the active one, when there is one: a virtualenv ($VIRTUAL_ENV) or a conda env other than
#     `base` ($CONDA_PREFIX), so people who manage their own environment keep it;
#   * otherwise ./.venv (or $FEWSHOT_VENV), created with `$FEWSHOT_BASE_PYTHON -m venv`
#     (default python3, which must be 3.10 or newer) when it does not exist yet.
#
# Installing (scripts/install.sh) takes minutes, so it runs only when needed: after a successful
# install the environment gets a stamp file holding a hash of everything that decides what gets
# installed (pyproject.toml, the install scripts, and this checkout's path, since the package is
# installed in editable mode from it). A run finds the stamp up to date and the packages still
# importable, and goes straight to COMMAND (well under a second). Set FEWSHOT_REINSTALL=1 to
# install again anyway.
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: bash scripts/with_env.sh COMMAND [ARG...]" >&2
  exit 2
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STAMP_NAME=.fewshot-acdc-install

if [ -n "${VIRTUAL_ENV:-}" ]; then
  env_dir=$VIRTUAL_ENV
  env_kind="active virtualenv"
elif [ -n "${CONDA_PREFIX:-}" ] && [ "${CONDA_DEFAULT_ENV:-base}" != "base" ]; then
  env_dir=$CONDA_PREFIX
  env_kind="active conda env '${CONDA_DEFAULT_ENV}'"
else
  env_dir=${FEWSHOT_VENV:-$repo/.venv}
  env_kind="project virtualenv"
fi
env_python=$env_dir/bin/python

sha256() {
  if command -v sha256sum >/dev/null; then sha256sum | cut -d' ' -f1; else shasum -a 256 | cut -d' ' -f1; fi
}

install_key() {
  # One line per input, so that moving text between the files still changes the key.
  {
    echo "checkout $repo"
    for f in pyproject.toml scripts/install.sh scripts/install_learn2learn.sh scripts/check_learn2learn.py; do
      echo "$f $(sha256 < "$repo/$f")"
    done
  } | sha256
}

installed() {
  [ "${FEWSHOT_REINSTALL:-0}" != 1 ] || return 1
  [ -x "$env_python" ] && [ -f "$env_dir/$STAMP_NAME" ] || return 1
  [ "$(cat "$env_dir/$STAMP_NAME")" = "$(install_key)" ] || return 1
  # The stamp says what was installed; this says it is still there (someone may have removed a
  # package since). find_spec locates the packages without importing torch, so it is quick.
  "$env_python" -c "
import importlib.util, sys
sys.exit(0 if all(importlib.util.find_spec(m) for m in ('torch', 'torchvision', 'fewshot_acdc', 'learn2learn', 'higher')) else 1)
" 2>/dev/null
}

if ! installed; then
  # Two set-ups at once (make demo and make test started together) would install into the same
  # environment concurrently; the second waits here, then finds the first one's stamp.
  if command -v flock >/dev/null; then
    exec 9<"$repo/scripts/with_env.sh"
    flock 9
  fi
  if ! installed; then
    start=$SECONDS
    if [ ! -x "$env_python" ]; then
      base=${FEWSHOT_BASE_PYTHON:-python3}
      if ! command -v "$base" >/dev/null; then
        echo "with_env.sh: no '$base' on PATH to create $env_dir; install Python 3.10+ or set FEWSHOT_BASE_PYTHON" >&2
        exit 1
      fi
      if ! "$base" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
        echo "with_env.sh: $base is Python $("$base" -c 'import platform; print(platform.python_version())'); this project needs 3.10 or newer (set FEWSHOT_BASE_PYTHON)" >&2
        exit 1
      fi
      echo "with_env.sh: creating the $env_kind $env_dir"
      "$base" -m venv "$env_dir"
    fi
    echo "with_env.sh: installing into the $env_kind $env_dir (minutes the first time)"
    rm -f "$env_dir/$STAMP_NAME"
    PYTHON=$env_python bash "$repo/scripts/install.sh"
    install_key > "$env_dir/$STAMP_NAME"
    echo "with_env.sh: installed in $((SECONDS - start)) s"
  fi
  if command -v flock >/dev/null; then
    exec 9<&-
  fi
fi

# COMMAND sees the environment as if it were activated: `python`, `pytest` are the env's.
if [ "$env_kind" = "project virtualenv" ]; then
  export VIRTUAL_ENV=$env_dir
fi
export PATH="$env_dir/bin:$PATH"
unset PYTHONHOME
exec "$@"
