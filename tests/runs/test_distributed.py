"""Data-parallel meta-training under torchrun (fewshot_acdc.runs.distributed, docs/distributed.md).

Two CPU processes on gloo, spawned by the tests, train the same tiny runs as one process: the
parameters and Adam's state after 3 meta-steps must equal the single-process run's to float
rounding (the largest difference is printed), for standard and ACDC-net convolutions, scopes
``all`` and ``atoms``, learned step sizes and an uneven split; resuming under two processes (and
from a one-process checkpoint) must reproduce the uninterrupted run. The command is run through
``torchrun`` itself for rank 0's files, the eval JSON and the start-up errors.
"""
import json
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as multiprocessing

from fewshot_acdc.config import load_config
from fewshot_acdc.runs import distributed
from fewshot_acdc.runs.checkpoint import load_checkpoint
from fewshot_acdc.runs.evaluation import evaluate_run
from fewshot_acdc.runs.training import TrainingStopped, train

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")
WORLD = 2


def tiny(tmp_path, **changes):
    """Seconds per run: Conv4 on 16 px built-in images, 3-way 1-shot, one inner step, no atom drop
    (atom-drop masks are drawn per rank, see ProcessGroup.reduce_meta_gradient)."""
    values = {"dataset": "builtin", "backbone": "conv4", "acdc": "net", "atoms": 4, "atom_drop": 0.0,
              "image_size": 16, "ways": 3, "shots": 1, "queries": 2, "queries_eval": 2, "inner_steps": 1,
              "inner_steps_eval": 1, "inner_lr": 0.1, "meta_lr": 0.01, "meta_batch": 4, "iterations": 3,
              "log_every": 1, "val_every": 3, "val_episodes": 5, "test_episodes": 5,
              "episode_dir": str(tmp_path / "episodes"), "device": "cpu", "threads": 1}
    return load_config(None, values).replace(**changes)  # a change of conv kind drops the ACDC atoms


CASES = {
    "standard-all": {"acdc": "none"},
    "acdc-net-all": {},
    "acdc-net-atoms": {"adapt": "atoms"},
    "acdc-net-atoms-lslr-uneven": {"adapt": "atoms+head", "learn_inner_lr": "lslr", "meta_batch": 3,
                                   "inner_lr": {"atoms": 0.01, "head": 0.1}},
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """This process computes the single-process references with one thread, as every rank does:
    with two, the convolutions' backward sums in another order, and Adam's normalisation (g / sqrt(v)
    for gradients near eps) turns that last-digit difference into parameter differences near 1e-4,
    which would hide what the comparison is for. The eval file's machine block records the count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class StopAt(Exception):
    pass


def _stop_at(iteration):
    def on_step(current):
        if current == iteration:
            raise StopAt(current)
    return on_step


def _worker(rank: int, port: int, jobs, report: str) -> None:
    """One rank: join the group as under torchrun, run every job, record each outcome."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    outcomes = []
    group = distributed.start("cpu", meta_batch=min(job[0].meta_batch for job in jobs if job[0] is not None), timeout_seconds=60)
    try:
        for config, run_dir, resume, stop_at in jobs:
            try:
                if config is None:  # an evaluation of run_dir's last checkpoint, split across the ranks
                    evaluate_run(run_dir, checkpoint="last", episodes=5, device="cpu", distributed=group)
                else:
                    train(config, run_dir, resume=resume, progress=False, distributed=group,
                          on_step=_stop_at(stop_at) if stop_at else None)
                outcomes.append("finished")
            except StopAt:
                outcomes.append("stopped")
            except Exception as error:  # recorded for the test to assert on
                outcomes.append(f"{type(error).__name__}: {error}")
    except BaseException:
        outcomes.append(traceback.format_exc())
    finally:
        distributed.stop(group)
        Path(report.format(rank=rank)).write_text(json.dumps(outcomes))


def run_two_processes(jobs, tmp_path):
    """Run ``jobs`` ``(config, run_dir, resume, stop_at_iteration)`` in two spawned ranks, in order;
    returns each rank's outcomes."""
    report = str(tmp_path / "outcomes-{rank}.json")
    multiprocessing.spawn(_worker, args=(_free_port(), jobs, report), nprocs=WORLD, join=True)
    return [json.loads(Path(report.format(rank=rank)).read_text()) for rank in range(WORLD)]


def largest_difference(expected, actual) -> float:
    """Max |a - b| / max(1, max |a|) over the matching tensors of two state dicts (nested); structure
    must agree. Relative to each tensor's scale because Adam's second moments of the atoms' gradients
    reach the hundreds, where float32 summation order alone (gloo's all-reduce adds in another order
    than one process does) moves the last digits by more than 1e-5; a wrong gradient scale or a
    missed rank still shows as a difference near 1."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor) and expected.shape == actual.shape
        if not expected.numel():
            return 0.0
        scale = max(1.0, float(expected.double().abs().max()))
        return float((expected.double() - actual.double()).abs().max()) / scale
    if isinstance(expected, dict):
        assert expected.keys() == actual.keys()
        return max([largest_difference(expected[k], actual[k]) for k in expected] or [0.0])
    if isinstance(expected, (list, tuple)):
        assert len(expected) == len(actual)
        return max([largest_difference(a, b) for a, b in zip(expected, actual)] or [0.0])
    assert expected == actual
    return 0.0


def assert_same_state(expected_dir, actual_dir, label, tolerance=1e-4):
    # 1e-4 of each tensor's scale: an ACDC atom's meta-gradient sums over every channel pair of its
    # layer, and its float32 rounding in another order reaches ~4e-5 (docs/distributed.md); a
    # missing rank or a wrong average moves values by their whole size.
    expected = load_checkpoint(Path(expected_dir) / "checkpoints" / "last.pt")
    actual = load_checkpoint(Path(actual_dir) / "checkpoints" / "last.pt")
    assert expected["iteration"] == actual["iteration"]
    differences = {part: largest_difference(expected[part], actual[part])
                   for part in ("model", "step_sizes", "optimizer")}
    print(f"{label}: largest difference after {expected['iteration']} meta-steps: "
          + ", ".join(f"{part} {value:.2e}" for part, value in differences.items()))
    assert max(differences.values()) <= tolerance, differences
    return differences


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """Every two-process run of this module in one spawn (starting processes is the slow part)."""
    tmp_path = tmp_path_factory.mktemp("distributed")
    jobs = [(tiny(tmp_path, **changes), tmp_path / "ddp" / name, False, None) for name, changes in CASES.items()]
    drop = tiny(tmp_path, atom_drop=0.1, iterations=6)
    jobs += [(drop, tmp_path / "ddp" / "straight", False, None),
             (drop, tmp_path / "ddp" / "interrupted", False, 4),
             (drop, tmp_path / "ddp" / "interrupted", True, None)]
    # Resumed under two processes from a one-process checkpoint (the world size changes).
    single_then_two = tmp_path / "single-then-two"
    train(tiny(tmp_path, iterations=2, val_every=2), single_then_two, progress=False)
    jobs.append((tiny(tmp_path), single_then_two, True, None))
    # A diverging resume: every rank stops, the last good checkpoint stays.
    diverging = tmp_path / "ddp" / "diverging"
    jobs += [(tiny(tmp_path), diverging, False, None),
             (tiny(tmp_path, iterations=5, inner_lr=1e30), diverging, True, None)]
    # The test episodes split unevenly (5 on 2 ranks) and gathered.
    jobs.append((None, tmp_path / "ddp" / "acdc-net-all", False, None))
    outcomes = run_two_processes(jobs, tmp_path)
    return tmp_path, outcomes


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_take_the_single_process_steps(two_process_runs, name):
    tmp_path, outcomes = two_process_runs
    assert outcomes[0][list(CASES).index(name)] == "finished", outcomes
    single = tmp_path / "single" / name
    train(tiny(tmp_path, **CASES[name]), single, progress=False)
    assert_same_state(single, tmp_path / "ddp" / name, name)
    # Rank 0's metrics describe the whole meta-batch: the reduced loss, accuracy and diagnostics.
    lines = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()]
    ddp = [json.loads(line) for line in (tmp_path / "ddp" / name / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == len(ddp) == 3
    for one, two in zip(lines, ddp):
        for key in ("meta_loss", "train_accuracy", "support_loss_after", "val_accuracy"):
            if key in one:
                assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-6), key
        for role, norm in one["grad_norm_by_role"].items():
            assert two["grad_norm_by_role"][role] == pytest.approx(norm, rel=1e-4), role
        for role, norms in one["inner_grad_norm_by_role"].items():
            assert two["inner_grad_norm_by_role"][role] == pytest.approx(norms, rel=1e-5), role
    summary = json.loads((tmp_path / "ddp" / name / "summary.json").read_text())
    assert summary["world_size"] == WORLD and summary["status"] == "finished"
    assert json.loads((single / "summary.json").read_text())["world_size"] == 1


def test_resume_under_two_processes_reproduces_the_uninterrupted_run(two_process_runs):
    tmp_path, outcomes = two_process_runs
    start = len(CASES)
    assert [rank[start:start + 3] for rank in outcomes] == [["finished", "stopped", "finished"]] * WORLD
    # Atom drop on: the ranks' shared RNG stream is in the checkpoint, so the resumed run draws the same masks.
    straight = load_checkpoint(tmp_path / "ddp" / "straight" / "checkpoints" / "last.pt")
    resumed = load_checkpoint(tmp_path / "ddp" / "interrupted" / "checkpoints" / "last.pt")
    assert resumed["iteration"] == 6
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert largest_difference(straight["optimizer"], resumed["optimizer"]) == 0.0
    lines = [json.loads(line) for line in (tmp_path / "ddp" / "interrupted" / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2, 3, 4, 5, 6]


def test_a_one_process_checkpoint_resumes_under_two_processes(two_process_runs):
    tmp_path, outcomes = two_process_runs
    assert outcomes[0][len(CASES) + 3] == "finished", outcomes
    whole = tmp_path / "single" / "whole"
    train(tiny(tmp_path), whole, progress=False)
    assert_same_state(whole, tmp_path / "single-then-two", "1 process to 2, then 3")
    provenance = [json.loads(line) for line in (tmp_path / "single-then-two" / "provenance.jsonl").read_text().splitlines()]
    assert [line["world_size"] for line in provenance] == [1, WORLD]


def test_a_diverging_step_stops_every_rank_and_keeps_the_last_good_checkpoint(two_process_runs):
    tmp_path, outcomes = two_process_runs
    first, diverged = len(CASES) + 4, len(CASES) + 5
    assert [rank[first] for rank in outcomes] == ["finished"] * WORLD
    for rank in outcomes:
        assert rank[diverged].startswith("TrainingStopped: training stopped at iteration 4"), rank[diverged]
        assert "iteration 3) is intact" in rank[diverged]
    assert load_checkpoint(tmp_path / "ddp" / "diverging" / "checkpoints" / "last.pt")["iteration"] == 3
    summary = json.loads((tmp_path / "ddp" / "diverging" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["iteration"] == 4 and summary["world_size"] == WORLD


def test_an_evaluation_split_across_ranks_writes_the_single_process_eval_file(two_process_runs):
    tmp_path, outcomes = two_process_runs
    assert [rank[-1] for rank in outcomes] == ["finished"] * WORLD, outcomes
    run = tmp_path / "ddp" / "acdc-net-all"
    written = json.loads((run / "eval" / "protocols" / "test_3way_1shot_checkpointlast.json").read_text())
    [single] = evaluate_run(run, checkpoint="last", episodes=5, device="cpu")
    assert written["episodes"] == 5 and written["episode_set"] == single["episode_set"]
    assert written["per_episode_accuracy"] == single["per_episode_accuracy"]
    assert {key for key in single if single[key] != written[key]} <= {"created"}


def test_shares_cover_the_items_in_order():
    for count in (1, 3, 4, 7):
        for world in range(1, count + 1):
            shares = [distributed.ProcessGroup(rank=rank, world_size=world).share(count) for rank in range(world)]
            assert [item for share in shares for item in share] == list(range(count))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_start_up_errors_come_before_any_rendezvous():
    environ = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}
    with pytest.raises(distributed.DistributedSetupError, match="2 processes, but a meta-batch has only 1 task"):
        distributed.start("cpu", meta_batch=1, environ=environ)
    if torch.cuda.device_count() < 2:
        with pytest.raises(distributed.DistributedSetupError, match="2 processes on this node, but torch sees"):
            distributed.start("cuda", meta_batch=4, environ=environ)
    assert distributed.start("cpu", meta_batch=1, environ={}) is distributed.SINGLE_PROCESS
    assert distributed.start("cpu", meta_batch=1, environ={**environ, "WORLD_SIZE": "1"}) is distributed.SINGLE_PROCESS


TINY_FLAGS = ["--dataset", "builtin", "--backbone", "conv4", "--acdc", "net", "--atoms", "4", "--atom-drop", "0",
              "--image-size", "16", "--ways", "3", "--shots", "1", "--queries", "2", "--queries-eval", "2",
              "--inner-steps", "1", "--inner-steps-eval", "1", "--meta-batch", "2", "--iterations", "4",
              "--val-every", "2", "--val-episodes", "3", "--test-episodes", "5", "--device", "cpu", "--threads", "1",
              "--quiet"]


def torchrun(*arguments, timeout=120, **environment):
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node", str(WORLD), str(ROOT / "run_maml.py"), *arguments]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **environment}
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout)


def test_a_killed_rank_ends_the_job_and_torchrun_resumes_it_to_the_one_process_run(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    episodes = ["--episode-dir", str(tmp_path / "episodes")]
    from fewshot_acdc.cli import train as train_cli
    assert train_cli.main(TINY_FLAGS + episodes + ["--out", str(single)]) == 0
    # Rank 0 is killed right after committing last.pt at iteration 2 ("committed" is rank 0's
    # alone): torchrun stops rank 1, which waits at the next all-reduce, and names the root cause.
    killed = torchrun(*TINY_FLAGS, *episodes, "--out", str(ddp), FEWSHOT_ACDC_FAULTS="committed:1")
    assert killed.returncode != 0
    root_cause = killed.stderr[killed.stderr.index("Root Cause"):]
    assert "rank      : 0" in root_cause and "SIGKILL" in root_cause, killed.stderr
    assert load_checkpoint(ddp / "checkpoints" / "last.pt")["iteration"] == 2
    resumed = torchrun("--resume", str(ddp), "--quiet")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert resumed.stdout.count("finished ") == 1 and resumed.stdout.count("test 3-way 1-shot:") == 1  # rank 0 prints
    assert json.loads((ddp / "summary.json").read_text())["world_size"] == WORLD
    assert sorted(path.name for path in ddp.iterdir()) == sorted(path.name for path in single.iterdir())
    assert_same_state(single, ddp, "torchrun, killed at 2 and resumed, vs 1 process")
    expected = json.loads((single / "eval" / "test_3way_1shot.json").read_text())
    actual = json.loads((ddp / "eval" / "test_3way_1shot.json").read_text())
    assert actual["episode_set"] == expected["episode_set"] and actual["episodes"] == 5
    assert actual["per_episode_accuracy"] == pytest.approx(expected["per_episode_accuracy"], abs=1e-6)
    lines = [json.loads(line)["iteration"] for line in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert lines == [2, 4]
    assert not list(ddp.glob("**/.*.tmp"))


def test_torchrun_with_more_processes_than_tasks_is_refused_at_start_up(tmp_path):
    result = torchrun(*TINY_FLAGS, "--meta-batch", "1", "--out", str(tmp_path / "run"), timeout=60)
    assert result.returncode != 0
    assert "torchrun started 2 processes, but a meta-batch has only 1 tasks" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_rank_builds_only_its_share_of_each_meta_batch(tmp_path):
    from fewshot_acdc.runs.data import open_split, training_batches
    config = tiny(tmp_path, meta_batch=3, iterations=3)
    dataset = open_split(config, "train")
    whole = list(training_batches(config, dataset, 1, torch.device("cpu")))
    share = list(training_batches(config, dataset, 1, torch.device("cpu"), share=range(1, 3)))
    assert [iteration for iteration, _ in share] == [2, 3] == [iteration for iteration, _ in whole]
    for (_, batch), (_, part) in zip(whole, share):
        assert len(part) == 2
        for episode, mine in zip(batch[1:], part):
            assert torch.equal(episode.support_images, mine.support_images)
            assert torch.equal(episode.query_labels, mine.query_labels)
