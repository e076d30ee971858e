"""Meta-learning algorithms on functional parameters: MAML with ACDC-aware inner-loop scopes.

See :mod:`fewshot_acdc.meta.maml` for the BatchNorm policy, what ``eval()`` means after
training, first/second order, task batching and the no-sync non-finite check.
"""
from .batchnorm import check_no_running_stats
from .episodes import Episode
from .errors import EpisodeError, NonFiniteLossError
from .functional import inner_loop
from .maml import MAML, TASK_BATCHING
from .scopes import SCOPES, adapted_parameter_names, check_scope

__all__ = [
    "MAML", "TASK_BATCHING", "EpisodeError", "NonFiniteLossError", "Episode", "inner_loop",
    "check_no_running_stats", "SCOPES", "adapted_parameter_names", "check_scope",
]
