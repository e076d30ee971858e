"""Where a result comes from: the code's git commit and the machine, recorded with every run.

A number in the README must be traceable to the code and hardware that produced it, and a run
resumed in a later session may continue on other code: each start or resume of training appends
one line to the run directory's ``provenance.jsonl`` (what :func:`record` writes), and the
benchmarks put the same fields in their reports.

A commit only identifies the code when the package had no uncommitted changes, so recording a
run or an evaluation from a changed tree is refused (:func:`check_recordable`) unless the user
asks for it (``--allow-dirty``, or ``FEWSHOT_ALLOW_DIRTY=1`` for scripts and tests); the record
then says so and carries a sha256 of the package's ``git diff``. The revision is captured once per
process, when this module is imported (:func:`process_revision`): a process runs the code it
imported, so an experiment grid that trains cells for days must record that code, not whatever
the tree holds when a later cell starts.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

REPOSITORY = Path(__file__).resolve().parents[2]
# What a training result depends on: the package (not configs, docs or recorded results).
PACKAGE_CODE = ("fewshot_acdc",)


def created_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def source_revision(root: Union[str, Path] = REPOSITORY, code: Sequence[str] = PACKAGE_CODE) -> Dict[str, Optional[object]]:
    """The git commit of ``root`` and whether ``code`` (paths in it) had uncommitted changes;
    ``None`` for both outside a git checkout (an installed package)."""
    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], cwd=root, capture_output=True, text=True, check=True).stdout
    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = git("status", "--porcelain", "--untracked-files=no", "--", *code).strip()
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": None, "uncommitted_changes": None}
    return {"git_commit": commit, "uncommitted_changes": bool(changed)}


#: The explicit opt-in to recording from a tree with uncommitted package changes, for scripts
#: and test suites (the commands' ``--allow-dirty`` is the same).
ALLOW_DIRTY_ENV = "FEWSHOT_ALLOW_DIRTY"


class UncommittedChangesError(RuntimeError):
    """Recording a result from package code that no commit holds, without the user's consent."""


def code_revision(root: Union[str, Path] = REPOSITORY, code: Sequence[str] = PACKAGE_CODE) -> Dict[str, Optional[object]]:
    """:func:`source_revision` plus ``diff_sha256``: a sha256 of ``git diff HEAD`` of ``code`` and of
    its untracked (not ignored) files, names and contents; ``None`` when there is nothing to hash
    (no changes, or not a git checkout). Two records with the same commit and hash ran the same code."""
    revision: Dict[str, Optional[object]] = {**source_revision(root, code), "diff_sha256": None}
    if revision["git_commit"] is None:
        return revision
    try:
        diff = subprocess.run(["git", "diff", "HEAD", "--binary", "--", *code], cwd=root, capture_output=True,
                              check=True).stdout
        untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "-z", "--", *code], cwd=root,
                                   capture_output=True, check=True).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return revision
    digest = hashlib.sha256(diff)
    new_files = sorted(name for name in untracked if name)
    for name in new_files:
        digest.update(b"\0untracked\0" + name + b"\0")
        try:
            digest.update((Path(root) / name.decode("utf-8", "surrogateescape")).read_bytes())
        except OSError:
            pass
    if diff or new_files:
        revision["uncommitted_changes"] = True
        revision["diff_sha256"] = digest.hexdigest()
    return revision


_PROCESS_REVISION: Optional[Dict[str, Optional[object]]] = None


def process_revision() -> Dict[str, Optional[object]]:
    """The package code this process runs: :func:`code_revision` as it was when this module was
    first imported (see the module docstring), not as the tree is now."""
    global _PROCESS_REVISION
    if _PROCESS_REVISION is None:
        _PROCESS_REVISION = code_revision()
    return dict(_PROCESS_REVISION)


def dirty_allowed(allow_dirty: bool = False) -> bool:
    """Whether the user asked to record from uncommitted code: the flag, or ``FEWSHOT_ALLOW_DIRTY=1``."""
    return allow_dirty or os.environ.get(ALLOW_DIRTY_ENV, "") not in ("", "0")


def check_recordable(what: str, allow_dirty: bool = False) -> Dict[str, Optional[object]]:
    """The revision to record with ``what`` (e.g. "training run"); raises
    :class:`UncommittedChangesError` when the process's package code has uncommitted changes and
    the user did not allow it. Allowed, the revision says so (``allowed_uncommitted``)."""
    revision = process_revision()
    if revision.get("uncommitted_changes"):
        if not dirty_allowed(allow_dirty):
            raise UncommittedChangesError(
                f"the package code ({REPOSITORY / PACKAGE_CODE[0]}) has uncommitted changes (git diff sha256 "
                f"{str(revision.get('diff_sha256'))[:12]}), so a {what} recorded from it names a commit that did not "
                f"produce it. Commit the changes, or pass --allow-dirty (or set {ALLOW_DIRTY_ENV}=1) to record it "
                "anyway: the record then says so and keeps the diff's hash")
        revision["allowed_uncommitted"] = True
    return revision


def machine() -> Dict[str, object]:
    """The hardware and software a run used, as far as Python can tell without extra packages."""
    import torch
    description: Dict[str, object] = {
        "hostname": platform.node(), "platform": platform.platform(), "processor": platform.machine(),
        "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        description["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return description


def record(run_dir: Union[str, Path], event: str, **fields: object) -> Dict[str, object]:
    """Append ``{event, time, source, machine, **fields}`` to ``run_dir/provenance.jsonl``."""
    entry = {"event": event, "time": created_now(), "source": recorded_revision(), "machine": machine(), **fields}
    path = Path(run_dir) / "provenance.jsonl"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")
    return entry


def recorded_revision() -> Dict[str, Optional[object]]:
    """What records name as their code: :func:`process_revision`, marked ``allowed_uncommitted``
    when it has changes (recording got this far only because the user allowed them)."""
    revision = process_revision()
    if revision.get("uncommitted_changes"):
        revision["allowed_uncommitted"] = True
    return revision


process_revision()  # captured at import: the code this process loaded (see the module docstring)
