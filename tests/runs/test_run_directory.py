"""Specification of the run directory's guarantees (docs/run_directory.md, issue 16): one process
at a time, a resume that is the uninterrupted run whatever the interruption, what a resume may
change, and metrics lines that are never lost, doubled or left torn."""
import json
import os
import random
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

from fewshot_acdc.config import ConfigError
from fewshot_acdc.faults import ENV as FAULTS_ENV
from fewshot_acdc.runs.checkpoint import load_checkpoint
from fewshot_acdc.runs.directory import MetricsFileError, RunDirectory, RunLockedError
from fewshot_acdc.runs.training import train

ROOT = Path(__file__).resolve().parents[2]
# What differs between two runs of the same computation: wall-clock time and memory.
TIMING = {"seconds", "seconds_interval", "seconds_per_step", "peak_memory_mb", "seconds_per_meta_step"}


class Interrupt(Exception):
    pass


def stop_at(iteration):
    def on_step(reached):
        if reached == iteration:
            raise Interrupt()
    return on_step


def metrics_without_timing(run):
    return [{k: v for k, v in record.items() if k not in TIMING} for record in RunDirectory(run).read_metrics()]


def assert_same_state(expected, actual):
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, actual["model"][name]), name
    for key, state in expected["optimizer"]["state"].items():
        for field, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(actual["optimizer"]["state"][key][field])), field
    assert expected["optimizer"]["param_groups"] == actual["optimizer"]["param_groups"]
    assert torch.equal(expected["rng"]["torch"], actual["rng"]["torch"])
    assert (expected["iteration"], expected["best_iteration"], expected["best_val_accuracy"]) == (
        actual["iteration"], actual["best_iteration"], actual["best_val_accuracy"])


def in_child(function, faults=""):
    """Run ``function()`` in a forked process (a real process: a real SIGKILL, the OS releasing
    its lock) without paying for another torch import; returns its exit status, negative for
    the signal that killed it."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            torch.set_num_threads(1)  # no OpenMP pool from the parent survives a fork
            os.environ[FAULTS_ENV] = faults
            function()
            code = 0
        except KeyboardInterrupt:
            code = 130
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="kills forked processes")
def test_interruptions_at_sampled_points_resume_to_the_uninterrupted_run(tiny_config, tmp_path):
    # Log intervals of two steps, so that a Ctrl-C can fall inside one (iteration 5); validation
    # and checkpoints at 3 and 6. Each attempt is killed (SIGKILL) or interrupted (SIGINT) at a
    # point of the commit protocol; occurrences are sampled with a fixed seed.
    config = tiny_config.replace(log_every=2)
    sample = random.Random(16)
    validation_episode = sample.randint(1, config.val_episodes - 1)
    attempts = [
        (False, f"validation:{sample.randint(1, config.val_episodes)}", -signal.SIGKILL),  # before any checkpoint
        (False, "committed:1", -signal.SIGKILL),          # a new start there; killed after last.pt, before its line
        (True, "write:metrics.jsonl:1", -signal.SIGKILL),  # inside the resume's repair of metrics.jsonl
        (True, "write:best.pt:1", -signal.SIGKILL),       # inside the resume's copy of last.pt to best.pt
        (True, f"step:{sample.randint(1, 2)}", -signal.SIGKILL),  # after lines no checkpoint covers yet
        (True, "step:2:SIGINT", 130),                     # Ctrl-C inside a log interval: saved at iteration 5
        (True, "write:last.pt:1", -signal.SIGKILL),       # last.pt of iteration 6 written, not yet renamed
        (True, f"validation:{validation_episode}:SIGINT,validation:{validation_episode + 1}:SIGINT", 130),  # twice
        (True, f"validation:{sample.randint(1, config.val_episodes)}:SIGINT", 130),  # once: saved after it
        (True, "", 0),
    ]
    straight, run = tmp_path / "straight", tmp_path / "run"
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # its imports (seconds) once, not in every child
    assert in_child(lambda: train(config, straight, progress=False)) == 0
    saved_at = []
    for resume, faults, expected_status in attempts:
        status = in_child(lambda: train(config, run, resume=resume, progress=False), faults)
        assert status == expected_status, faults
        iterations = [record["iteration"] for record in RunDirectory(run).read_metrics()]
        assert iterations == sorted(set(iterations)), (faults, iterations)  # never a line twice
        last = run / "checkpoints" / "last.pt"
        saved_at.append(load_checkpoint(last)["iteration"] if last.exists() else 0)
    assert saved_at == [0, 3, 3, 3, 3, 5, 5, 5, 6, 6]

    assert metrics_without_timing(run) == metrics_without_timing(straight)
    for name in ("last", "best"):
        assert_same_state(load_checkpoint(straight / "checkpoints" / f"{name}.pt"),
                          load_checkpoint(run / "checkpoints" / f"{name}.pt"))
    summaries = [{k: v for k, v in json.loads((r / "summary.json").read_text()).items() if k not in TIMING}
                 for r in (straight, run)]
    assert summaries[0] == summaries[1] and summaries[1]["config_changes"] == []
    assert not list(run.glob("**/.*.tmp"))
    assert (run / ".lock").read_text() == ""  # no holder named: nobody holds it


def hold_lock(run):
    """A process (no torch: fast) that holds ``run``'s lock until its stdin closes."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from fewshot_acdc.runs.directory import RunDirectory\n"
                               "with RunDirectory(sys.argv[1]).lock():\n"
                               "    print('locked', flush=True); sys.stdin.read()", str(run)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_process_is_refused_naming_the_holder_and_a_dead_holders_lock_is_taken_over(
        tiny_config, tmp_path, capsys):
    run = tmp_path / "run"
    holder = hold_lock(run)
    try:
        with pytest.raises(RunLockedError, match=rf"is in use by process {holder.pid} on .*--out"):
            train(tiny_config, run, progress=False)
        assert not (run / "config.yaml").exists()  # refused before writing anything
    finally:
        holder.kill()  # SIGKILL: no chance to clean up; the OS releases the flock
        holder.wait()
    assert str(holder.pid) in (run / ".lock").read_text()  # the dead holder is still named there
    train(tiny_config.replace(iterations=3), run, progress=False)
    assert f"took over {run / '.lock'} from process {holder.pid}" in capsys.readouterr().err
    assert RunDirectory(run).read_metrics()[-1]["iteration"] == 3


def test_a_changed_meta_lr_on_resume_takes_effect_and_is_recorded_with_its_iteration(tiny_config, tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        train(tiny_config, run, progress=False, on_step=stop_at(4))  # last.pt at iteration 3
    summary = train(tiny_config.replace(meta_lr=0.0005), run, resume=True, progress=False)
    assert "resuming at iteration 3 with meta_lr 0.003 -> 0.0005" in capsys.readouterr().err
    change = {"key": "meta_lr", "from": 0.003, "to": 0.0005, "from_iteration": 4}
    assert summary["config_changes"] == [change]
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["config_changes"] == [change]
    assert [group["lr"] for group in state["optimizer"]["param_groups"]] == [0.0005] * len(
        state["optimizer"]["param_groups"])
    # The rate the optimizer stepped with, as logged: the old one up to 3, the new one after.
    assert [record["meta_lr"] for record in RunDirectory(run).read_metrics()] == [0.003] * 3 + [0.0005] * 3
    provenance = [json.loads(line) for line in (run / "provenance.jsonl").read_text().splitlines()]
    assert provenance[-1]["event"] == "resume" and provenance[-1]["config_changes"] == [change]


def test_a_resume_refuses_changes_that_define_the_run_and_writes_nothing(tiny_config, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        train(tiny_config, run, progress=False, on_step=stop_at(4))
    before = {name: (run / name).read_bytes() for name in ("config.yaml", "metrics.jsonl", "checkpoints/last.pt")}
    with pytest.raises(ConfigError, match=r"--resume cannot change ways \(3 -> 4\): it defines the run.*"
                                          r"seed \(0 -> 1\).*may change only iterations, meta_lr"):
        train(tiny_config.replace(ways=4, seed=1), run, resume=True, progress=False)
    with pytest.raises(ConfigError, match=r"iterations \(6 -> 2\): the checkpoint is at iteration 3 already"):
        train(tiny_config.replace(iterations=2), run, resume=True, progress=False)
    assert before == {name: (run / name).read_bytes() for name in before}


def test_a_torn_or_corrupt_metrics_line_is_named_and_rewritten_from_the_checkpoint(tiny_config, tmp_path, capsys):
    straight = tmp_path / "straight"
    train(tiny_config, straight, progress=False)
    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        train(tiny_config, run, progress=False, on_step=stop_at(4))  # last.pt at 3, lines 1-4 on disk
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    lines[1] = lines[1][:40]  # garbled inside what the checkpoint covers
    metrics.write_text("\n".join(lines) + '\n{"iteration": 5, "meta_lo')  # and torn at the end
    with pytest.raises(MetricsFileError, match=rf"{metrics} line 2 is not valid JSON"):
        RunDirectory(run).read_metrics()

    train(tiny_config, run, resume=True, progress=False)
    err = capsys.readouterr().err
    assert f"{metrics} line 2 is not valid JSON" in err and "rewrote the lines up to iteration 3 from" in err
    assert "dropped 2 line(s) logged after the checkpoint at iteration 3" in err
    assert metrics_without_timing(run) == metrics_without_timing(straight)


def test_temporary_files_left_by_killed_writes_are_removed_on_start(tiny_config, tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_config.replace(iterations=3), run, progress=False)
    left = [run / "checkpoints" / ".last.pt.k1ll3d.tmp", run / "checkpoints" / ".best.pt.x.tmp",
            run / ".metrics.jsonl.y.tmp"]
    for path in left:
        path.write_bytes(b"")
    keep = run / "eval" / ".test_3way_1shot.json.z.tmp"  # evaluation may be writing it right now
    keep.parent.mkdir()
    keep.write_bytes(b"")
    train(tiny_config.replace(iterations=3), run, resume=True, progress=False)
    assert not any(path.exists() for path in left) and keep.exists()
    assert f"removed {left[0]}" in capsys.readouterr().err
