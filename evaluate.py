#!/usr/bin/env python
"""Evaluate a run on fixed test episodes: ``python evaluate.py --run runs/<name>`` (see --help)."""
import sys

from fewshot_acdc.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
