"""The ACDC paper's analyses as tools: what the decomposed layers learn and how a run adapts.

``python -m fewshot_acdc.analysis <atoms|coefficients|cam|adaptation> --run RUN --out DIR``
(docs/analysis.md), or the functions below. Each writes a figure plus the numbers behind it
(CSV/JSON) and reads a run exactly as evaluation does: the same checkpoint, step sizes and saved
episode set.
"""
from .adaptation import AdaptationCurve, adaptation_curve, run_adaptation
from .atoms import LayerAtoms, layer_atoms, run_atoms
from .cam import LayerCAM, class_activation_maps, class_channel_weights, run_cam
from .coefficients import (acdc_coefficients, canonical_correlations, decompose_kernel, effective_rank,
                           run_coefficients, singular_value_spectrum, standard_coefficients, svcca)
from .common import AnalysisError, TrainedRun, adaptation_trajectory, open_run

__all__ = [
    "AnalysisError", "TrainedRun", "open_run", "adaptation_trajectory",
    "AdaptationCurve", "adaptation_curve", "run_adaptation",
    "LayerAtoms", "layer_atoms", "run_atoms",
    "LayerCAM", "class_activation_maps", "class_channel_weights", "run_cam",
    "decompose_kernel", "singular_value_spectrum", "effective_rank", "canonical_correlations", "svcca",
    "standard_coefficients", "acdc_coefficients", "run_coefficients",
]
