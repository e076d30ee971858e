"""Where a result comes from: the code's git commit and the machine, recorded with every run.

A number in the README must be traceable to the code and hardware that produced it, and a run
resumed in a later session may continue on other code: each start or resume of training appends
one line to the run directory's ``provenance.jsonl`` (what :func:`record` writes), and the
benchmarks put the same fields in their reports.
"""
from __future__ import annotations

import datetime
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
    entry = {"event": event, "time": created_now(), "source": source_revision(), "machine": machine(), **fields}
    path = Path(run_dir) / "provenance.jsonl"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")
    return entry
