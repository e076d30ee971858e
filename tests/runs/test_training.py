"""Specification of fewshot_acdc.runs.training: the run directory, checkpoints, resume, failures."""
import json

import pytest
import torch

from fewshot_acdc.runs.checkpoint import CheckpointError, load_checkpoint
from fewshot_acdc.runs.evaluation import evaluate_run
from fewshot_acdc.runs.record import mean_ci95
from fewshot_acdc.runs.training import TrainingStopped, outer_step, train
from ..device_testing import HostTraffic


class Interrupt(Exception):
    pass


def test_a_run_directory_holds_everything_the_contract_names(tiny_config, tmp_path):
    run = tmp_path / "run"
    summary = train(tiny_config, run, progress=False)
    assert (run / "config.yaml").is_file()
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "checkpoints" / "best.pt").is_file()
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [1, 2, 3, 4, 5, 6]
    validated = [line for line in lines if "val_accuracy" in line]
    assert [line["iteration"] for line in validated] == [3, 6]
    for line in lines:
        assert {"meta_loss", "train_accuracy", "seconds", "seconds_per_step", "peak_memory_mb"} <= set(line)
    assert summary == json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["iterations"] == 6
    assert summary["best_val_accuracy"] == max(line["val_accuracy"] for line in validated)
    assert summary["adapted_parameters"] == summary["total_parameters"]  # adapt: all
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 6


def test_the_progress_bar_ends_showing_the_validation_the_final_log_line_reports(tiny_config, tmp_path, capsys):
    # Issue 17: the postfix was set before the step's validation, so the bar's last state showed
    # the previous validation (here, with one validation at the last step: none at all).
    run = tmp_path / "run"
    summary = train(tiny_config.replace(val_every=6), run, progress=True)
    bar = capsys.readouterr().err
    last_state = bar.replace("\n", "\r").rstrip("\r").rsplit("\r", 1)[-1]
    [validated] = [line for line in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                   if "val_accuracy" in line]
    assert validated["iteration"] == 6 and "6/6" in last_state
    assert f"val={validated['val_accuracy']:.3f}" in last_state
    assert f"best={summary['best_val_accuracy']:.3f}" in last_state


def test_resume_after_an_interruption_reaches_the_uninterrupted_parameters(tiny_config, tmp_path):
    straight = tmp_path / "straight"
    train(tiny_config, straight, progress=False)

    interrupted = tmp_path / "interrupted"

    def stop_at_four(iteration):
        if iteration == 4:
            raise Interrupt()

    with pytest.raises(Interrupt):
        train(tiny_config, interrupted, progress=False, on_step=stop_at_four)
    assert load_checkpoint(interrupted / "checkpoints" / "last.pt")["iteration"] == 3
    train(tiny_config, interrupted, resume=True, progress=False)

    expected = load_checkpoint(straight / "checkpoints" / "last.pt")
    resumed = load_checkpoint(interrupted / "checkpoints" / "last.pt")
    assert resumed["iteration"] == 6
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    lines = [json.loads(line)["iteration"] for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert lines == [1, 2, 3, 4, 5, 6]  # the interval after the checkpoint is logged once


def test_recomputed_inner_steps_may_be_turned_on_by_a_resume_and_continue_the_same_run(tiny_config, tmp_path):
    """The option changes memory and time, not the meta-gradient (tests/meta/test_recompute.py), so
    a resume may turn it on (e.g. after running out of GPU memory) and the run goes on, bit for bit."""
    straight = tmp_path / "straight"
    train(tiny_config, straight, progress=False)
    run = tmp_path / "run"

    def stop_at_four(iteration):
        if iteration == 4:
            raise Interrupt()

    with pytest.raises(Interrupt):
        train(tiny_config, run, progress=False, on_step=stop_at_four)
    summary = train(tiny_config.replace(recompute_inner_steps=True), run, resume=True, progress=False)
    assert summary["config_changes"] == [{"key": "recompute_inner_steps", "from": False, "to": True,
                                          "from_iteration": 4}]
    expected = load_checkpoint(straight / "checkpoints" / "last.pt")["model"]
    resumed = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    for name, tensor in expected.items():
        assert torch.equal(resumed[name], tensor), name  # the same ops in the same order


@pytest.mark.parametrize("recompute", [False, True], ids=["plain", "recomputed"])
def test_the_trainers_meta_step_runs_on_a_device_reading_the_host_once_after_the_backward(tiny_config, recompute):
    """outer_step (meta-gradient, clipping, Adam, cosine schedule) with the model and the
    episodes on torch's ``meta`` device (tests/device_testing.py): besides the label check of
    episodes already on the device, the one read is the meta-step's statistics, after the
    backward; nothing else on the way reads or writes the host."""
    from fewshot_acdc.meta import Episode
    from fewshot_acdc.runs.builders import build_maml, build_model, build_optimizer, build_scheduler
    config = tiny_config.replace(meta_lr_schedule="cosine", grad_clip=1.0, inner_steps=2,
                                 recompute_inner_steps=recompute)
    torch.manual_seed(0)
    with torch.device("meta"):
        model = build_model(config, in_channels=3)
    maml = build_maml(config, model)
    optimizer = build_optimizer(config, maml)
    scheduler = build_scheduler(config, optimizer)
    labels = torch.arange(config.ways, device="meta")
    episodes = [Episode(torch.randn(3, 3, 20, 20, device="meta"), labels, torch.randn(6, 3, 20, 20, device="meta"),
                        labels.repeat(2)) for _ in range(config.meta_batch)]
    with HostTraffic():
        outer_step(maml, episodes, optimizer, scheduler, config.grad_clip, 1)
    with HostTraffic() as traffic:
        stats = outer_step(maml, episodes, optimizer, scheduler, config.grad_clip, 2)
    assert traffic.reads == [("fewshot_acdc/meta/episodes.py", "check_label_ranges"),
                             ("fewshot_acdc/meta/maml.py", "meta_gradient")]
    assert traffic.writes == [] and isinstance(stats["meta_loss"], float)
    assert all(p.device.type == "meta" and p.grad.device.type == "meta" for p in model.parameters())


def test_keyboard_interrupt_keeps_the_state_between_meta_steps(tiny_config, tmp_path):
    run = tmp_path / "run"

    def control_c(iteration):
        if iteration == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_config, run, progress=False, on_step=control_c)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 5


def test_a_diverging_run_stops_naming_the_iteration_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path):
    run = tmp_path / "run"
    train(tiny_config, run, progress=False)
    good = (run / "checkpoints" / "last.pt").read_bytes()
    exploding = tiny_config.replace(iterations=9, inner_lr=1e30)
    with pytest.raises(TrainingStopped, match=r"training stopped at iteration 7: .*iteration 6\) is intact"):
        train(exploding, run, resume=True, progress=False)
    assert (run / "checkpoints" / "last.pt").read_bytes() == good
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["iteration"] == 7


def test_refuses_to_overwrite_an_existing_run(tiny_config, tmp_path):
    train(tiny_config.replace(iterations=3), tmp_path / "run", progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config, tmp_path / "run", progress=False)


def test_a_truncated_checkpoint_is_named(tiny_config, tmp_path):
    run = tmp_path / "run"
    train(tiny_config.replace(iterations=3), run, progress=False)
    path = run / "checkpoints" / "last.pt"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="last.pt is corrupt"):
        train(tiny_config, run, resume=True, progress=False)


def test_evaluation_writes_per_episode_accuracies_on_a_fixed_episode_set(tiny_config, tmp_path):
    run = tmp_path / "run"
    train(tiny_config, run, progress=False)
    first = evaluate_run(run, shots=[1, 2], device="cpu")
    again = evaluate_run(run, shots=[1], device="cpu")
    assert [r["shots"] for r in first] == [1, 2]
    record = json.loads((run / "eval" / "test_3way_1shot.json").read_text())
    assert record["episodes"] == 5 == len(record["per_episode_accuracy"])
    assert record["episode_set"] == first[0]["episode_set"] == again[0]["episode_set"]
    assert record["per_episode_accuracy"] == first[0]["per_episode_accuracy"]  # same episodes, same model
    mean, ci95, _ = mean_ci95(record["per_episode_accuracy"])
    assert record["mean_accuracy"] == pytest.approx(mean) and record["ci95"] == pytest.approx(ci95)
    assert (run / "eval" / "test_3way_2shot.json").is_file()
    # what the number depends on besides the episodes (issues 15 and 17)
    assert record["batchnorm"].startswith("transductive") and record["inner_lr"] == tiny_config.inner_lr
    assert record["learn_inner_lr"] == "none" and len(record["source"]["git_commit"]) == 40
    assert record["machine"]["cpu_count"] >= 1


def test_learned_step_sizes_are_checkpointed_resumed_and_used_by_evaluation(tiny_config, tmp_path):
    config = tiny_config.replace(learn_inner_lr="meta-sgd", adapt="atoms+head", meta_lr_schedule="cosine",
                                 inner_lr={"atoms": 0.01, "head": 0.1})
    whole, interrupted = tmp_path / "whole", tmp_path / "interrupted"
    train(config, whole, progress=False)

    def stop_at_3(iteration):
        if iteration == 3:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(config, interrupted, progress=False, on_step=stop_at_3)
    summary = train(config, interrupted, resume=True, progress=False)
    assert summary["status"] == "finished"
    a = load_checkpoint(whole / "checkpoints" / "last.pt")
    b = load_checkpoint(interrupted / "checkpoints" / "last.pt")
    assert a["step_sizes"].keys() == b["step_sizes"].keys() and len(a["step_sizes"]) > 0
    assert all(torch.equal(a["step_sizes"][key], b["step_sizes"][key]) for key in a["step_sizes"])
    assert any(not torch.all(scale == 1) for scale in a["step_sizes"].values())  # they were meta-learned
    assert a["scheduler"]["last_epoch"] == 6
    lines = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["meta_lr"] == pytest.approx(0.0, abs=1e-12)  # cosine to meta_lr_min (0) at the end
    assert "inner_grad_norm_by_role" in lines[-1] and "support_loss_after" in lines[-1]
    record = evaluate_run(whole, shots=[1], device="cpu")[0]
    assert record["learn_inner_lr"] == "meta-sgd"


def test_mean_ci95_by_hand():
    mean, ci95, _ = mean_ci95([0.2, 0.4, 0.6, 0.8])
    assert mean == pytest.approx(0.5)
    assert ci95 == pytest.approx(1.96 * (0.05 ** 0.5) / 2)


def test_the_plateau_rule_stops_when_no_validation_beats_the_best_earlier_one_beyond_its_ci():
    from fewshot_acdc.runs.training import plateaued
    lines = [{"iteration": i, "val_accuracy": a, "val_ci95": 0.02} for i, a in enumerate([0.5, 0.6, 0.61, 0.62, 0.615], 1)]
    assert plateaued(lines, 3)          # 0.62 is within 0.6 +- 0.02
    assert not plateaued(lines[:4], 3)  # one earlier validation only: 0.62 > 0.5 + 0.02
    assert not plateaued(lines + [{"val_accuracy": 0.65}], 3)  # 0.65 beats 0.6 + 0.02
    assert not plateaued(lines, None) and not plateaued(lines[:3], 3)
    assert plateaued([{"meta_loss": 1.0}] + lines, 3)  # lines without a validation do not count


def test_a_run_with_the_plateau_rule_stops_early_and_says_so(tiny_config, tmp_path):
    run = tmp_path / "run"
    summary = train(tiny_config.replace(val_every=1, plateau_validations=1), run, progress=False)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert summary["stopped_early"] == lines[-1]["iteration"] < 6
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == summary["stopped_early"]


def test_a_resume_that_fails_leaves_config_yaml_as_the_checkpoints_run_had_it(tiny_config, tmp_path):
    from fewshot_acdc.runs.directory import resume_config
    run = tmp_path / "run"
    train(tiny_config, run, progress=False)
    before = (run / "config.yaml").read_text()
    with pytest.raises(TrainingStopped):  # the change explodes before the resumed run commits anything
        train(tiny_config.replace(iterations=9, inner_lr=1e30), run, resume=True, progress=False)
    assert (run / "config.yaml").read_text() == before
    # so a bare --resume continues the checkpoint's run instead of failing the same way again
    summary = train(resume_config(run, {"iterations": 9}), run, resume=True, progress=False)
    assert summary["config_changes"] == [{"key": "iterations", "from": 6, "to": 9, "from_iteration": 7}]
    assert resume_config(run).iterations == 9  # recorded once the resumed run committed a checkpoint


def test_a_corrupt_config_yaml_falls_back_to_the_config_in_last_pt(tiny_config, tmp_path):
    from fewshot_acdc.config import ConfigError
    from fewshot_acdc.runs.directory import resume_config
    run = tmp_path / "run"
    train(tiny_config.replace(iterations=3), run, progress=False)
    (run / "config.yaml").write_bytes(b"\x00\xff: [unclosed\n")
    notes = []
    config = resume_config(run, {"iterations": 6}, notify=notes.append)
    assert config == tiny_config.replace(iterations=6)
    assert len(notes) == 1 and "using the config recorded in" in notes[0] and "last.pt" in notes[0]
    train(config, run, resume=True, progress=False)
    assert resume_config(run) == tiny_config.replace(iterations=6)  # config.yaml written again
    (run / "config.yaml").write_text("iterations: [\n")
    (run / "checkpoints" / "last.pt").unlink()
    with pytest.raises(ConfigError, match="holds no readable config to fall back on. Repair config.yaml"):
        resume_config(run)
