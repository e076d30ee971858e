"""fewshot-acdc: few-shot classification with MAML on atom-coefficient decomposed backbones.

Subpackages: ``nn`` (ACDC layers and the conv factory), ``models`` (backbones and their
registry), ``meta`` (MAML on functional parameters), ``data`` (datasets and episodes),
``results`` (tables and figures), ``cli`` (the commands).
"""
__version__ = "0.1.0"
