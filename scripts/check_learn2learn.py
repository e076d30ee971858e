"""Usage: python scripts/check_learn2learn.py VERSION [--report]

Exit 0 when learn2learn VERSION imports (with ``--report``, print that it is installed), else 1
(with ``--report``, print why). scripts/install_learn2learn.sh asks this before building and
after installing.

Why a script: importing learn2learn imports gym, and gym 0.26 prints a four-line notice that it
is unmaintained to stderr on every import. Nothing in this project uses gym (learn2learn imports
it for its RL modules), so the notice only alarms whoever installs. This drops exactly that
notice (the texts gym itself takes from ``gym_notices``) and passes on anything else the import
writes, so a real failure still shows.
"""
from __future__ import annotations

import contextlib
import io
import sys


def gym_notices() -> list[str]:
    try:
        from gym_notices.notices import notices
    except Exception:  # no gym_notices: gym prints nothing either
        return []
    return [text for text in notices.values() if text]


def without_gym_notice(text: str) -> str:
    for notice in gym_notices():
        text = text.replace(notice + "\n", "").replace(notice, "")
    return text


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    version, report = argv[0], "--report" in argv[1:]
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            import learn2learn
    except Exception as error:  # any import failure means "not (properly) installed"
        if report:
            sys.stderr.write(without_gym_notice(captured.getvalue()))
            print(f"learn2learn does not import: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    sys.stderr.write(without_gym_notice(captured.getvalue()))
    if learn2learn.__version__ != version:
        if report:
            print(f"learn2learn {learn2learn.__version__} is installed, not {version}", file=sys.stderr)
        return 1
    if report:
        print("learn2learn", learn2learn.__version__, "installed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
