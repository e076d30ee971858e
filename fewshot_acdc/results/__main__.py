"""``python -m fewshot_acdc.results RUN_OR_PARENT [...] --out DIR`` (see ``--help``).

The command (its flags and its output) is fewshot_acdc.cli.results: only cli/ reads argv.
"""
from __future__ import annotations

import sys

from ..cli.results import PROG, OutputError, check_output_dir, main, make_parser  # noqa: F401  (the command's names)

if __name__ == "__main__":
    sys.exit(main())
