"""Inner-loop scopes: which parameters MAML adapts within a task, chosen by name.

A scope is a set of parameter roles (see :func:`fewshot_acdc.nn.parameter_roles`):

* ``all``: every parameter (classic MAML);
* ``atoms``: only the ACDC dictionary atoms; coefficients, BN and head are meta-learned in the
  outer loop but frozen within a task;
* ``head``: only the linear classifier;
* ``atoms+head``: atoms and classifier.
"""
from __future__ import annotations

from typing import Dict, FrozenSet, List, Optional

from torch import nn

from ..nn import parameter_roles
from ..utils import closest_name

SCOPES: Dict[str, Optional[FrozenSet[str]]] = {
    "all": None,  # every role
    "atoms": frozenset({"atoms"}),
    "head": frozenset({"head"}),
    "atoms+head": frozenset({"atoms", "head"}),
}


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"unknown adaptation scope {scope!r}{closest_name(scope, SCOPES)}; accepted: {', '.join(SCOPES)}")
    return scope


def adapted_parameter_names(model: nn.Module, scope: str) -> List[str]:
    """Names (as in ``model.named_parameters()``) of the parameters adapted under ``scope``.

    Raises ``ValueError`` when the scope selects nothing, e.g. ``atoms`` on a standard-conv
    backbone: adapting nothing would silently turn MAML into plain meta-training.
    """
    roles = parameter_roles(model)
    wanted = SCOPES[check_scope(scope)]
    names = [name for name, role in roles.items() if wanted is None or role in wanted]
    if not names:
        present = sorted(set(roles.values()))
        raise ValueError(
            f"adaptation scope {scope!r} selects no parameter of this {type(model).__name__} "
            f"(its parameter roles are: {', '.join(present)}); "
            + ("'atoms' needs an ACDC backbone (conv kind acdc-*)" if "atoms" in (wanted or ()) else "")
        )
    return names
