"""Inner-loop scopes: which parameters MAML adapts within a task, chosen by name.

A scope is a set of parameter roles (see :func:`fewshot_acdc.nn.parameter_roles`):

* ``all``: every parameter (classic MAML);
* ``atoms``: only the ACDC dictionary atoms; coefficients, BN and head are meta-learned in the
  outer loop but frozen within a task;
* ``head``: only the linear classifier;
* ``atoms+head``: atoms and classifier;
* ``coefficients``: only the coefficients: DCF's per-layer coefficients on its fixed
  Fourier-Bessel atoms (also ACDC's coefficients, shared or not);
* ``combination``: only BasisConv's learned 1x1 combinations (its basis filters are fixed);
* ``scales``: only the per-repetition scales of learnable-repetition convs (the tiled base
  tensor is meta-learned but frozen within a task);
* ``coefficients+head``, ``combination+head``, ``scales+head``: the same and the classifier.

Each conv kind's small part: ``atoms`` (ACDC), ``coefficients`` (DCF), ``combination``
(BasisConv), ``scales`` (repetition); :data:`KIND_SCOPES` names it.
"""
from __future__ import annotations

from typing import Dict, FrozenSet, List, Optional

from torch import nn

from ..nn import parameter_roles
from ..utils import closest_name
from ..vocabulary import FAMILY_SCOPES, ROLE_HOLDERS, SCOPE_TABLE, kinds_with_role

# scope name -> the roles it adapts (None: every role); defined once in fewshot_acdc.vocabulary.
SCOPES: Dict[str, Optional[FrozenSet[str]]] = {name: scope.roles for name, scope in SCOPE_TABLE.items()}
# Conv family -> the scope that adapts its small part within a task.
KIND_SCOPES = FAMILY_SCOPES


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
            + "; ".join(f"{role!r} needs {ROLE_HOLDERS[role][1]} ({kinds_with_role(role)})"
                        for role in sorted(wanted or ()) if role in ROLE_HOLDERS)
        )
    return names
