"""Command-line entry points: ``run_maml.py`` (train), ``evaluate.py`` (score a run)."""
