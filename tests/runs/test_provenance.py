"""Specification of fewshot_acdc.runs.provenance: a result recorded from package code with
uncommitted changes is refused unless the user allows it, and then says so with the diff's hash;
the revision is the one the process imported, not the tree's state when a later cell records."""
import json
import subprocess

import pytest

from fewshot_acdc.runs import provenance
from fewshot_acdc.runs.evaluation import evaluate_run
from fewshot_acdc.runs.training import train

DIRTY = {"git_commit": "0" * 40, "uncommitted_changes": True, "diff_sha256": "ab" * 32}


@pytest.fixture
def dirty_process(monkeypatch):
    """This process imported package code with uncommitted changes, and the user did not opt in."""
    monkeypatch.setattr(provenance, "_PROCESS_REVISION", dict(DIRTY))
    monkeypatch.delenv(provenance.ALLOW_DIRTY_ENV, raising=False)


def test_training_from_uncommitted_code_is_refused_before_anything_is_written(tiny_config, tmp_path, dirty_process):
    with pytest.raises(provenance.UncommittedChangesError, match="uncommitted changes .*--allow-dirty"):
        train(tiny_config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_allowed_the_records_say_so_and_keep_the_diffs_hash(tiny_config, tmp_path, dirty_process):
    run = tmp_path / "run"
    train(tiny_config.replace(iterations=3), run, progress=False, allow_dirty=True)
    start = json.loads((run / "provenance.jsonl").read_text().splitlines()[0])
    assert start["source"] == {**DIRTY, "allowed_uncommitted": True}
    with pytest.raises(provenance.UncommittedChangesError):
        evaluate_run(run, device="cpu")
    assert not (run / "eval").exists()
    [record] = evaluate_run(run, device="cpu", allow_dirty=True)
    assert record["source"]["allowed_uncommitted"] is True and record["source"]["diff_sha256"] == "ab" * 32


def test_the_environment_variable_is_the_same_opt_in(tiny_config, tmp_path, dirty_process, monkeypatch):
    monkeypatch.setenv(provenance.ALLOW_DIRTY_ENV, "1")
    assert provenance.check_recordable("training run")["allowed_uncommitted"] is True
    monkeypatch.setenv(provenance.ALLOW_DIRTY_ENV, "0")
    with pytest.raises(provenance.UncommittedChangesError):
        provenance.check_recordable("training run")


def test_a_clean_revision_is_recorded_as_it_is(monkeypatch):
    clean = {"git_commit": "1" * 40, "uncommitted_changes": False, "diff_sha256": None}
    monkeypatch.setattr(provenance, "_PROCESS_REVISION", dict(clean))
    monkeypatch.delenv(provenance.ALLOW_DIRTY_ENV, raising=False)
    assert provenance.check_recordable("evaluation") == clean
    assert provenance.recorded_revision() == clean


def test_the_revision_is_captured_once_per_process(monkeypatch):
    # A grid trains cells for days in one process: edits made meanwhile are not the code it runs.
    monkeypatch.setattr(provenance, "_PROCESS_REVISION", None)
    calls = []
    monkeypatch.setattr(provenance, "code_revision", lambda: calls.append(1) or dict(DIRTY))
    first = provenance.process_revision()
    monkeypatch.setattr(provenance, "code_revision", lambda: pytest.fail("read the tree again"))
    assert provenance.process_revision() == first == DIRTY and calls == [1]


def git(root, *arguments):
    return subprocess.run(["git", *arguments], cwd=root, check=True, capture_output=True, text=True).stdout


def test_the_diff_hash_follows_the_package_code_only(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "fewshot_acdc").mkdir()
    (tmp_path / "fewshot_acdc" / "a.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("text\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    clean = provenance.code_revision(tmp_path)
    assert clean["uncommitted_changes"] is False and clean["diff_sha256"] is None
    (tmp_path / "README.md").write_text("other text\n")
    assert provenance.code_revision(tmp_path)["uncommitted_changes"] is False
    (tmp_path / "fewshot_acdc" / "a.py").write_text("x = 2\n")
    changed = provenance.code_revision(tmp_path)
    assert changed["uncommitted_changes"] is True and len(changed["diff_sha256"]) == 64
    (tmp_path / "fewshot_acdc" / "b.py").write_text("y = 1\n")  # a new, untracked module is code too
    assert provenance.code_revision(tmp_path)["diff_sha256"] != changed["diff_sha256"]
