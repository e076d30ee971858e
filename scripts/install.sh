#!/usr/bin/env bash
# One command that installs everything into the active Python environment: torch (pinned),
# the package in editable mode with its development and reference extras, and learn2learn.
set -euo pipefail
PYTHON=${PYTHON:-python}
cd "$(dirname "$0")/.."
"$PYTHON" -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
"$PYTHON" -m pip install --quiet -e ".[dev,reference]"
PYTHON="$PYTHON" bash scripts/install_learn2learn.sh
