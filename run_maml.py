#!/usr/bin/env python
"""Meta-train with MAML: ``python run_maml.py --backbone resnet18 --acdc net`` (see --help)."""
import sys

from fewshot_acdc.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
