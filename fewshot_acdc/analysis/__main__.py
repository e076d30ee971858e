"""``python -m fewshot_acdc.analysis <command> --run RUN --out DIR`` (see ``--help``).

The command (its flags and its output) is fewshot_acdc.cli.analysis: only cli/ reads argv.
"""
from __future__ import annotations

import sys

from ..cli.analysis import main, make_parser  # noqa: F401  (the command's names)

if __name__ == "__main__":
    sys.exit(main())
