#!/usr/bin/env python
"""Supervised pretraining: ``python pretrain.py --backbone resnet18 --acdc net --dataset omniglot`` (see --help)."""
import sys

from fewshot_acdc.cli.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
