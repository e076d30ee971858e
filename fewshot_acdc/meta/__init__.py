"""Meta-learning algorithms on functional parameters."""
from .scopes import SCOPES, adapted_parameter_names, check_scope

__all__ = ["SCOPES", "adapted_parameter_names", "check_scope"]
