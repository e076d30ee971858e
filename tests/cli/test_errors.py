"""Specification of the commands' errors (issue 16): one line naming the path and what to do, exit
code 1, no traceback (unless --debug); and the inputs that used to be taken silently."""
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fewshot_acdc import utils
from fewshot_acdc.cli import evaluate as evaluate_cli
from fewshot_acdc.cli import train as train_cli
from fewshot_acdc.config import load_config, save_config

from .test_commands import TINY

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = f"{open.__module__}.open"  # the global a pickle of CreatesAFile names


class CreatesAFile:
    """A payload: unpickling it would call open(path, "w")."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def one_error_line(err, prog="run_maml.py"):
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note:")]
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


def test_a_malicious_miniimagenet_pickle_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    marker = tmp_path / "payload-ran"
    (data / "mini-imagenet-cache-train.pkl").write_bytes(pickle.dumps(CreatesAFile(marker)))
    args = ["--dataset", "miniimagenet", "--data-root", str(data), "--backbone", "conv4", "--device", "cpu",
            "--out", str(tmp_path / "run"), "--quiet"]
    assert train_cli.main(args) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"mini-imagenet-cache-train.pkl: refusing to load pickle: it references the global '{PAYLOAD}'" in line
    assert train_cli.main(args + ["--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "UnsafePickleError" in err
    assert err.rstrip().splitlines()[-1].startswith("run_maml.py: error: ")
    assert not marker.exists()


def test_out_pointing_at_a_file_is_one_line(tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("not a directory")
    assert train_cli.main(TINY + ["--out", str(target)]) == 1
    assert f"{target} is a file, not a run directory; choose another --out" in one_error_line(capsys.readouterr().err)


def test_a_full_disk_names_the_file_and_says_so_and_the_run_resumes_once_there_is_space(
        tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"

    def full_disk_save(*args, **kwargs):  # what torch raises when the disk fills under it
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1344 vs 1240")

    monkeypatch.setattr(torch, "save", full_disk_save)
    monkeypatch.setattr(utils, "_free_bytes", lambda directory: 0)
    args = TINY + ["--out", str(run), "--episode-dir", str(tmp_path / "episodes"), "--no-eval"]
    assert train_cli.main(args) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"cannot write {run / 'checkpoints' / 'last.pt'}: the disk is full" in line
    assert "enforce fail" not in line
    assert not list(run.glob("**/.*.tmp"))
    monkeypatch.undo()
    assert train_cli.main(["--resume", str(run), "--quiet", "--no-eval"]) == 0


def test_an_unsafe_checkpoint_is_refused_without_advice_to_load_it_unsafely(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    config = load_config(None, {"dataset": "builtin", "backbone": "conv4", "atoms": 4, "image_size": 20,
                                "ways": 3, "episode_dir": str(tmp_path / "episodes"), "device": "cpu"})
    save_config(config, run / "config.yaml")
    marker = tmp_path / "payload-ran"
    torch.save({"version": 1, "model": {}, "iteration": 1, "extra": CreatesAFile(marker)},
               run / "checkpoints" / "best.pt")
    assert evaluate_cli.main(["--run", str(run), "--episodes", "2", "--quiet"]) == 1
    line = one_error_line(capsys.readouterr().err, "evaluate.py")
    assert f"best.pt holds objects other than tensors and plain containers (it names {PAYLOAD})" in line
    assert "weights_only" not in line and "trust" in line
    assert not marker.exists()


def test_one_way_episodes_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(["--ways", "1"])
    assert exit_info.value.code == 2
    assert "ways must be >= 2" in capsys.readouterr().err
    assert evaluate_cli.main(["--run", str(tmp_path), "--ways", "1"]) == 1
    assert "--ways must be >= 2" in one_error_line(capsys.readouterr().err, "evaluate.py")


def test_a_key_given_twice_in_a_yaml_config_is_refused_naming_it_and_its_lines(tmp_path, capsys):
    config = tmp_path / "twice.yaml"
    config.write_text("backbone: conv4\nmeta_lr: 0.001\nways: 5\nmeta_lr: 0.01\n")
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(["--config", str(config)])
    assert exit_info.value.code == 2
    assert f"config file {config}: key 'meta_lr' is given twice (lines 2 and 4)" in capsys.readouterr().err


def test_a_second_run_maml_into_a_run_in_progress_exits_naming_the_holder(tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from fewshot_acdc.runs.directory import RunDirectory\n"
                               "with RunDirectory(sys.argv[1]).lock():\n"
                               "    print('locked', flush=True); sys.stdin.read()", str(run)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert train_cli.main(TINY + ["--out", str(run)]) == 1
        line = one_error_line(capsys.readouterr().err)
        assert f"{run} is in use by process {holder.pid}" in line and "another --out" in line
    finally:
        holder.stdin.close()
        holder.wait()
    assert (run / ".lock").read_text() == ""  # released in order: nobody named


def test_flags_given_with_resume_that_cannot_change_are_refused_listing_what_may(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli.main(TINY + ["--out", str(run), "--episode-dir", str(tmp_path / "episodes"), "--no-eval"]) == 0
    assert train_cli.main(["--resume", str(run), "--shots", "2", "--quiet", "--no-eval"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "--resume cannot change shots (1 -> 2)" in line and "may change only iterations, meta_lr" in line
    with pytest.raises(SystemExit):
        train_cli.main(["--resume", str(run), "--out", str(tmp_path / "elsewhere")])
    assert "--out cannot move it" in capsys.readouterr().err
    assert sorted(os.listdir(run / "checkpoints")) == ["best.pt", "last.pt"]  # nothing written by the refusals


def test_a_corrupt_config_yaml_does_not_block_resume_the_checkpoint_carries_the_config(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli.main(TINY + ["--out", str(run), "--episode-dir", str(tmp_path / "episodes"), "--no-eval"]) == 0
    (run / "config.yaml").write_text("backbone: conv4\n  iterations: [broken\n")
    capsys.readouterr()
    assert train_cli.main(["--resume", str(run), "--iterations", "4", "--quiet", "--no-eval"]) == 0
    err = capsys.readouterr().err
    assert "usage:" not in err and "note: saved config" in err and "using the config recorded in" in err
    assert "iterations: 4" in (run / "config.yaml").read_text()  # written again with the next checkpoint


@pytest.mark.parametrize("count", ["0", "-3"])
def test_evaluate_refuses_episode_counts_below_one_alike(tmp_path, capsys, count):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_cli.main(["--run", str(tmp_path), "--episodes", count])
    assert exit_info.value.code == 2
    assert f"argument --episodes: {count!r}: give a whole number >= 1" in capsys.readouterr().err


def test_evaluate_prints_its_result_and_where_it_went(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli.main(TINY + ["--out", str(run), "--episode-dir", str(tmp_path / "episodes"), "--no-eval"]) == 0
    capsys.readouterr()
    assert evaluate_cli.main(["--run", str(run), "--inner-steps-eval", "0", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "inner_steps_eval=0) -> " in out and out.rstrip().endswith("test_3way_1shot_inner_steps_eval0.json")
    assert not (run / "eval" / "test_3way_1shot.json").exists()
