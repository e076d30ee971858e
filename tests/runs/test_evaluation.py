"""Specification of fewshot_acdc.runs.evaluation's batched scoring: the same accuracies as
sequential scoring, episode by episode, whatever the stack size."""
import json

import pytest
import torch

from fewshot_acdc.config import ConfigError
from fewshot_acdc.meta import MAML
from fewshot_acdc.models import create_backbone
from fewshot_acdc.runs.evaluation import evaluate_run, score_episodes
from fewshot_acdc.runs.training import train
from fewshot_acdc.data import Episode


def tiny_maml():
    torch.manual_seed(0)
    model = create_backbone("conv4", "acdc-net", atoms=4, num_classes=3, image_size=16, track_running_stats=False)
    return MAML(model.double(), scope="all", inner_lr=0.1, inner_steps=1, inner_steps_eval=2)


def episodes(count, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat_interleave(2)
    return [Episode(torch.randn(6, 3, 16, 16, generator=generator, dtype=torch.float64), labels,
                    torch.randn(6, 3, 16, 16, generator=generator, dtype=torch.float64), labels)
            for _ in range(count)]


@pytest.mark.parametrize("batch_size", [2, 3, 5, None])
def test_score_episodes_in_stacks_gives_the_sequential_accuracies_in_order(batch_size):
    maml, tasks = tiny_maml(), episodes(5)
    sequential = score_episodes(maml, tasks, torch.device("cpu"), batch_size=1)
    consumed = []

    def stream():  # a generator, as a progress bar is: drawn one stack at a time
        for episode in tasks:
            consumed.append(episode)
            yield episode
    assert score_episodes(maml, stream(), torch.device("cpu"), batch_size=batch_size) == sequential
    assert len(consumed) == 5
    assert len(set(sequential)) > 1  # the episodes are told apart: order matters for the comparison


def test_score_episodes_of_nothing_is_empty():
    assert score_episodes(tiny_maml(), [], torch.device("cpu"), batch_size=None) == []
    assert score_episodes(tiny_maml(), [], torch.device("cpu"), batch_size=4) == []


def test_eval_batch_changes_no_recorded_accuracy_and_may_change_on_resume(tiny_config, tmp_path):
    run = tmp_path / "run"
    train(tiny_config.replace(iterations=3), run, progress=False)
    one = evaluate_run(run, shots=[1], device="cpu", eval_batch=1)[0]
    stacked = evaluate_run(run, shots=[1], device="cpu", eval_batch=3)[0]  # 5 episodes: stacks of 3 and 2
    assert stacked["per_episode_accuracy"] == one["per_episode_accuracy"]
    assert stacked["mean_accuracy"] == one["mean_accuracy"]
    # an evaluation-only setting: a resume may change it, and it is recorded as a change
    summary = train(tiny_config.replace(eval_batch=2), run, resume=True, progress=False)
    assert {"key": "eval_batch", "from": None, "to": 2, "from_iteration": 4} in summary["config_changes"]


def test_eval_batch_must_be_positive_or_null(tiny_config):
    with pytest.raises(ConfigError, match="eval_batch must be >= 1 or null"):
        tiny_config.replace(eval_batch=0)
    with pytest.raises(ConfigError, match="did you mean 'eval_batch'"):
        tiny_config.replace(eval_batches=2)
    assert tiny_config.eval_batch is None


def test_inner_steps_are_chosen_on_validation_episodes_and_used_for_the_test(tiny_config, tmp_path):
    from fewshot_acdc.cli.evaluate import main as evaluate_main
    from fewshot_acdc.runs.evaluation import select_inner_steps
    run = tmp_path / "run"
    train(tiny_config.replace(iterations=3, atom_drop=0.0), run, progress=False)
    selection = select_inner_steps(run, [3, 0, 1], episodes=6, device="cpu")
    assert [row["inner_steps_eval"] for row in selection["candidates"]] == [0, 1, 3]
    assert selection["split"] == "val" and selection["episodes"] == 6 and selection["ways"] == 3
    # Each candidate is the val evaluation with that many steps, on the same fixed episodes.
    for row in selection["candidates"]:
        [record] = evaluate_run(run, split="val", shots=[1], episodes=6, inner_steps_eval=row["inner_steps_eval"],
                                device="cpu")
        assert record["mean_accuracy"] == pytest.approx(row["mean_accuracy"], abs=1e-12)
        assert record["episode_set"] == selection["episode_set"]
    best = max(row["mean_accuracy"] for row in selection["candidates"])
    assert selection["chosen"] == min(row["inner_steps_eval"] for row in selection["candidates"]
                                      if row["mean_accuracy"] == best)
    written = json.loads((run / "eval" / "selection" / "inner-steps_val_3way_1shot.json").read_text())
    assert written["chosen"] == selection["chosen"] and len(written["source"]["git_commit"]) == 40
    # The command chooses on val, then writes the test file with the chosen count: a protocol of its
    # own when it is not the run's (tiny_config's 2), beside the run's result, never over it.
    assert evaluate_main(["--run", str(run), "--select-steps", "0,1,3", "--select-episodes", "6", "--device", "cpu",
                          "--quiet"]) == 0
    chosen = selection["chosen"]
    name = "test_3way_1shot.json" if chosen == 2 else f"protocols/test_3way_1shot_inner_steps_eval{chosen}.json"
    test = json.loads((run / "eval" / name).read_text())
    assert test["inner_steps_eval"] == chosen


def test_select_steps_refuses_a_fixed_step_count_too(tiny_config, tmp_path, capsys):
    from fewshot_acdc.cli.evaluate import main as evaluate_main
    run = tmp_path / "run"
    train(tiny_config.replace(iterations=1), run, progress=False)
    assert evaluate_main(["--run", str(run), "--select-steps", "1,2", "--inner-steps-eval", "3", "--device", "cpu"]) != 0
    assert "drop --inner-steps-eval" in capsys.readouterr().err


def test_another_protocol_gets_a_file_of_its_own_and_the_runs_result_stays(tiny_config, tmp_path):
    from fewshot_acdc.results import collect_runs
    run = tmp_path / "run"
    train(tiny_config.replace(iterations=3), run, progress=False)
    [own] = evaluate_run(run, device="cpu")
    kept = (run / "eval" / "test_3way_1shot.json").read_text()
    assert "protocol" not in own
    [other] = evaluate_run(run, device="cpu", inner_steps_eval=0, episodes=4)
    assert other["protocol"] == "inner_steps_eval=0, episodes=4" and other["episodes"] == 4
    assert (run / "eval" / "test_3way_1shot.json").read_text() == kept  # never replaced
    assert json.loads((run / "eval" / "protocols" / "test_3way_1shot_inner_steps_eval0_episodes4.json").read_text()) \
        == other
    # the run's own protocol, asked for explicitly, is the run's file
    [same] = evaluate_run(run, device="cpu", inner_steps_eval=tiny_config.inner_steps_eval,
                          episodes=tiny_config.test_episodes)
    assert same["per_episode_accuracy"] == own["per_episode_accuracy"] and "protocol" not in same
    # the results module reads the run's number, from the run's protocol
    [record] = collect_runs([run])
    result = record.get_eval("test", 3, 1)
    assert result.per_episode_accuracy.tolist() == own["per_episode_accuracy"] and result.protocol_note is None


def test_every_eval_file_lists_each_episodes_index_and_identity(tiny_config, tmp_path):
    from fewshot_acdc.runs.data import evaluation_episodes, open_split
    run = tmp_path / "run"
    train(tiny_config.replace(iterations=3), run, progress=False)
    [record] = evaluate_run(run, device="cpu")
    episode_set = evaluation_episodes(tiny_config, open_split(tiny_config, "test"), 3, 1, 5, split="test")
    assert record["episode_identities"] == [{"index": i, "hash": h} for i, h in episode_set.identities()]


def test_an_unwritable_destination_is_refused_before_anything_is_scored(tiny_config, tmp_path, monkeypatch):
    from fewshot_acdc.runs import evaluation
    from fewshot_acdc.utils import PathError
    run = tmp_path / "run"
    train(tiny_config.replace(iterations=3), run, progress=False)
    (run / "eval").write_text("a file where eval/ should be\n")  # (root ignores permissions; a file does not)
    monkeypatch.setattr(evaluation, "score_episode_set", lambda *a, **k: pytest.fail("scored before the check"))
    with pytest.raises(PathError, match=r"cannot write .*test_3way_1shot.json: .*nothing was evaluated"):
        evaluate_run(run, device="cpu")


def test_a_write_that_fails_after_scoring_names_the_unsaved_result(tiny_config, tmp_path, monkeypatch):
    from fewshot_acdc.runs.directory import RunDirectory
    from fewshot_acdc.utils import WriteError
    run = tmp_path / "run"
    train(tiny_config.replace(iterations=3), run, progress=False)

    def full(self, path, payload):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(RunDirectory, "write_json", full)
    with pytest.raises(WriteError, match=r"test_3way_1shot.json: No space left on device; the result, not saved: "
                                         r"test 3-way 1-shot \d+\.\d\d% \+- \d+\.\d\d% \(5 episodes"):
        evaluate_run(run, device="cpu")


@pytest.mark.parametrize("episodes", [0, -3])
def test_episode_counts_below_one_are_refused(tiny_config, tmp_path, episodes):
    run = tmp_path / "run"
    train(tiny_config.replace(iterations=1), run, progress=False)
    with pytest.raises(ValueError, match=f"--episodes must be >= 1 .*got {episodes}"):
        evaluate_run(run, device="cpu", episodes=episodes)
    assert not (run / "eval").exists()


def test_identities_are_backfilled_into_old_eval_files_without_scoring_again(tiny_config, tmp_path, monkeypatch):
    from fewshot_acdc.runs import evaluation
    from fewshot_acdc.runs.evaluation import backfill_episode_identities
    run = tmp_path / "run"
    train(tiny_config.replace(iterations=3), run, progress=False)
    evaluate_run(run, device="cpu")
    path = run / "eval" / "test_3way_1shot.json"
    written = json.loads(path.read_text())
    old = {key: value for key, value in written.items() if key != "episode_identities"}
    path.write_text(json.dumps(old))
    monkeypatch.setattr(evaluation, "score_episode_set", lambda *a, **k: pytest.fail("scored again"))
    assert backfill_episode_identities(path) == "added"
    assert json.loads(path.read_text()) == written and list(json.loads(path.read_text())) == list(written)
    assert backfill_episode_identities(path) == "present"
    path.write_text(json.dumps({**old, "episode_set": "builtin-test-3w1s2q-seed0-00000000"}))
    with pytest.raises(ValueError, match="names episode set builtin-test-3w1s2q-seed0-00000000 but the data"):
        backfill_episode_identities(path)
