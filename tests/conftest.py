"""Settings every test shares.

The suite trains and evaluates runs as a user would, and those refuse to record from package
code with uncommitted changes (fewshot_acdc.runs.provenance). A developer runs the tests on a
changed tree by definition, so the suite opts in explicitly, as a script would, with
``FEWSHOT_ALLOW_DIRTY=1`` for the whole session (not through ``monkeypatch``, whose ``undo()``
in a test would take it away); the tests of the refusal itself remove it with
``monkeypatch.delenv``.
"""
import os

import pytest

from fewshot_acdc.runs.provenance import ALLOW_DIRTY_ENV


@pytest.fixture(autouse=True, scope="session")
def _allow_uncommitted_code():
    before = os.environ.get(ALLOW_DIRTY_ENV)
    os.environ[ALLOW_DIRTY_ENV] = "1"
    yield
    if before is None:
        os.environ.pop(ALLOW_DIRTY_ENV, None)
    else:
        os.environ[ALLOW_DIRTY_ENV] = before
