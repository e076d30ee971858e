"""What the commands share: argument parsing that names an unknown flag's closest valid one, and
errors reported as one line (the traceback only with ``--debug``)."""
from __future__ import annotations

import argparse
import os
import pickle
import sys
import traceback
from typing import Any, Dict, List, NoReturn, Optional, Sequence, Union, get_args, get_origin, get_type_hints

from ..config import TrainConfig, settings
from ..utils import closest_name
from ..vocabulary import SIZE_KEYS


def add_setting_flag(parser, key: str, config_class: type = TrainConfig) -> None:
    """The flag of config setting ``key``, as its field declares it (fewshot_acdc.config.setting):
    ``--<key with dashes>``, destination ``key``, default None (absent: the config decides), the
    type from the annotation (``Optional[X]``: X; bool: a flag that sets True) or the setting's own
    ``parse``, and its choices, metavar and help."""
    declared = settings(config_class)[key]
    annotation = get_type_hints(config_class)[key]
    if get_origin(annotation) is Union and type(None) in get_args(annotation):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    flag = "--" + key.replace("_", "-")
    if annotation is bool:
        parser.add_argument(flag, dest=key, action="store_const", const=True, help=declared.help)
        return
    if declared.parse is not None:
        kind = declared.parse
    elif annotation in (int, float):
        kind = annotation
    elif annotation is str:
        kind = None
    else:
        raise TypeError(f"setting {key}: no flag type for {annotation}; give setting(..., parse=...) or flag=False")
    options: Dict[str, Any] = {"dest": key, "help": declared.help}
    if kind is not None:
        options["type"] = kind
    if declared.choices is not None:
        options["choices"] = declared.choices
    if declared.metavar is not None:
        options["metavar"] = declared.metavar
    parser.add_argument(flag, **options)


def add_setting_flags(parser, group: str, config_class: type = TrainConfig) -> List[str]:
    """The flags of every setting of ``group`` (fewshot_acdc.config.FLAG_GROUPS) that has one, in
    field order; returns their keys."""
    keys = [key for key, declared in settings(config_class).items() if declared.flag and declared.group == group]
    for key in keys:
        add_setting_flag(parser, key, config_class)
    return keys


def add_size_flags(parser) -> None:
    """``--atoms``, ``--rank``, ``--bessel-atoms``, ``--base-width``: each conv kind's size under its
    own name (fewshot_acdc.vocabulary.ConvKind.size_key), destinations = the config keys."""
    for key in SIZE_KEYS:
        add_setting_flag(parser, key)


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


DEBUG_ENV = "FEWSHOT_DEBUG"
# What goes wrong with data, checkpoints, output paths and configs: our errors name the file and
# what to do, so the traceback would only bury that line. (An UnsafePickleError is an
# UnpicklingError.) Anything else is a bug and keeps its traceback.
USER_ERRORS = (OSError, ValueError, RuntimeError, pickle.UnpicklingError)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help=f"on an error, print the full traceback too (or set {DEBUG_ENV}=1)")


def add_allow_dirty_flag(parser) -> None:
    parser.add_argument("--allow-dirty", action="store_true",
                        help="record the result even though the package code has uncommitted changes (the record "
                             "says so and keeps a sha256 of the diff; FEWSHOT_ALLOW_DIRTY=1 does the same)")


def report_error(prog: str, error: BaseException, debug: bool = False) -> int:
    """Print ``prog: error: ...`` (after the traceback with --debug or $FEWSHOT_DEBUG); returns exit code 1."""
    if debug or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        traceback.print_exception(type(error), error, error.__traceback__)
    print(f"{prog}: error: {error_message(error)}", file=sys.stderr)
    return 1


def error_message(error: BaseException) -> str:
    text = str(error)
    filename = getattr(error, "filename", None)
    if isinstance(error, OSError) and filename is not None and error.strerror and str(filename) not in error.strerror:
        # An OSError from the standard library: "[Errno 2] No such file or directory: 'x'".
        return f"{filename}: {error.strerror}"
    return text or type(error).__name__
