"""Argument parsing shared by the commands: unknown flags are named with the closest valid one."""
from __future__ import annotations

import argparse
import sys
from typing import List, NoReturn, Optional, Sequence

from ..utils import closest_name


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but ``--backbon`` says ``(did you mean '--backbone'?)``.

    Abbreviations are off: a prefix silently standing for a flag hides typos in scripts.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Optional[Sequence[str]] = None, namespace=None):  # type: ignore[override]
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            flags: List[str] = [s for action in self._actions for s in action.option_strings]
            problems = []
            for token in unknown:
                if token.startswith("-"):
                    flag = token.split("=", 1)[0]
                    problems.append(f"unknown flag {flag}{closest_name(flag, flags)}")
                else:
                    problems.append(f"unexpected argument {token!r}")
            self.error("; ".join(problems))
        return parsed

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")
