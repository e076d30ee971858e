"""Specification of fewshot_acdc.runs.pretraining: supervised pretraining, its run directory and
resume, and starting MAML from it (``--init``), including no meta-training at all."""
import json

import numpy as np
import pytest
import torch

from fewshot_acdc.config import ConfigError
from fewshot_acdc.data import create_dataset
from fewshot_acdc.data.episodes import Episode
from fewshot_acdc.models import create_backbone
from fewshot_acdc.runs import pretraining
from fewshot_acdc.runs.checkpoint import CheckpointError, load_checkpoint
from fewshot_acdc.runs.evaluation import evaluate_run
from fewshot_acdc.runs.builders import make_optimizer
from fewshot_acdc.runs.pretraining import (epoch_batches, holdout_split, initialise_from_pretrained,
                                          nearest_centroid_accuracy, pretrain, pretraining_step, score_pretrained)
from fewshot_acdc.runs.training import TrainingStopped, train
from ..device_testing import HostTraffic


class Interrupt(Exception):
    pass


@pytest.fixture
def small_builtin(monkeypatch, tmp_path):
    """The built-in dataset cut to 12/6/6 classes of 10 images, so an epoch takes a second."""
    def open_small(config, split):
        return create_dataset("builtin", split, image_size=config.image_size, seed=0,
                              class_counts={"train": 12, "val": 6, "test": 6}, images_per_class=10,
                              cache_dir=tmp_path / "cache")
    monkeypatch.setattr(pretraining, "open_split", open_small)
    import fewshot_acdc.runs.training as training
    import fewshot_acdc.runs.data as data
    monkeypatch.setattr(training, "open_split", open_small)
    monkeypatch.setattr(data, "open_split", open_small)
    return open_small


@pytest.fixture
def pretrain_config(tiny_config):
    return tiny_config.replace(pretrain_epochs=3, pretrain_batch=16, pretrain_holdout=2, pretrain_lr=0.05,
                               atom_drop=0.0, test_episodes=4)


def test_the_last_images_of_every_class_are_held_out():
    labels = np.array([0, 1, 0, 1, 0, 1, 2, 2, 2])
    train_indices, held = holdout_split(labels, 3, 1)
    assert held.tolist() == [4, 5, 8] and train_indices.tolist() == [0, 1, 2, 3, 6, 7]
    with pytest.raises(ValueError, match="class 0 has 3 images: pretrain_holdout 3 leaves none"):
        holdout_split(labels, 3, 3)


def test_an_epoch_order_depends_on_seed_and_epoch_only():
    indices = np.arange(50)
    first = epoch_batches(indices, 16, seed=0, epoch=1)
    assert [b.tolist() for b in first] == [b.tolist() for b in epoch_batches(indices, 16, seed=0, epoch=1)]
    assert [len(b) for b in first] == [16, 16, 16, 2]  # a last batch of 2 kept
    assert first[0].tolist() != epoch_batches(indices, 16, seed=0, epoch=2)[0].tolist()
    assert sorted(np.concatenate(first).tolist()) == list(range(50))
    assert [len(b) for b in epoch_batches(np.arange(33), 16, seed=0, epoch=1)] == [16, 16]  # one image: dropped


def test_nearest_centroid_matches_an_independent_computation():
    torch.manual_seed(0)
    model = create_backbone("conv4", conv="standard", num_classes=3, in_channels=3, image_size=20,
                            track_running_stats=False).double()
    episode = Episode(torch.randn(6, 3, 20, 20, dtype=torch.float64), torch.tensor([0, 0, 1, 1, 2, 2]),
                      torch.randn(9, 3, 20, 20, dtype=torch.float64), torch.tensor([0, 1, 2] * 3))
    with torch.no_grad():
        features = model.embed(torch.cat([episode.support_images, episode.query_images])).numpy()
    support, query = features[:6], features[6:]
    centroids = np.stack([support[2 * c:2 * c + 2].mean(0) for c in range(3)])
    distances = ((query[:, None, :] - centroids[None]) ** 2).sum(-1)
    expected = (distances.argmin(1) == np.array([0, 1, 2] * 3)).mean()
    with torch.no_grad():
        assert float(nearest_centroid_accuracy(model, episode)) == pytest.approx(expected)


def test_nearest_centroid_with_the_ways_given_is_the_same():
    torch.manual_seed(0)
    model = create_backbone("conv4", conv="standard", num_classes=3, image_size=20, track_running_stats=False)
    episode = Episode(torch.randn(6, 3, 20, 20), torch.tensor([0, 0, 1, 1, 2, 2]),
                      torch.randn(9, 3, 20, 20), torch.tensor([0, 1, 2] * 3))
    with torch.no_grad():
        assert torch.equal(nearest_centroid_accuracy(model, episode, 3), nearest_centroid_accuracy(model, episode))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("backbone, conv", [("conv4", "standard"), ("resnet10", "acdc-net")])
def test_a_pretraining_step_and_its_validation_run_on_a_device_without_reading_the_host(backbone, conv, optimizer):
    """Parameters, batch and optimiser state on torch's ``meta`` device (tests/device_testing.py):
    a tensor made on the host would fail, and nothing is read back, so an epoch's only host reads
    are its sums at the end (and the few-shot validation's one read of all its accuracies)."""
    torch.manual_seed(0)
    with torch.device("meta"):
        model = create_backbone(backbone, conv, num_classes=12, image_size=20, track_running_stats=False,
                                **({"atom_drop": 0.1} if conv != "standard" else {}))
    sgd = make_optimizer(optimizer, dict(model.named_parameters()), 0.05, 5e-4, 0.9, {})
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(sgd, T_max=10)
    images, labels = torch.randn(8, 3, 20, 20, device="meta"), torch.zeros(8, dtype=torch.int64, device="meta")
    episode = Episode(torch.randn(5, 3, 20, 20, device="meta"), torch.arange(5, device="meta"),
                      torch.randn(10, 3, 20, 20, device="meta"), torch.arange(5, device="meta").repeat(2))
    with HostTraffic() as traffic:
        for _ in range(2):  # the second with the optimiser's state in place
            loss, correct = pretraining_step(model, sgd, schedule, images, labels)
        model.eval()
        with torch.no_grad():
            accuracy = nearest_centroid_accuracy(model, episode, ways=5)
    assert traffic.transfers == []
    assert loss.device.type == correct.device.type == accuracy.device.type == "meta"
    assert all(p.grad.device.type == "meta" for p in model.parameters())
    assert all(value.device.type in ("meta", "cpu") for state in sgd.state.values() for value in state.values())


def test_pretraining_writes_a_run_directory_and_learns(small_builtin, pretrain_config, tmp_path):
    run = tmp_path / "pre"
    summary = pretrain(pretrain_config, run, progress=False)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    for line in lines:
        assert {"train_loss", "heldout_accuracy", "heldout_ci95", "val_accuracy", "val_ci95", "seconds_epoch"} <= set(line)
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    assert summary == json.loads((run / "summary.json").read_text())
    assert summary["kind"] == "pretraining" and summary["classes"] == 12
    assert summary["train_images"] == 12 * 8 and summary["heldout_images"] == 12 * 2
    assert summary["best_val_accuracy"] == max(line["val_accuracy"] for line in lines)
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["iteration"] == summary["best_epoch"] and best["kind"] == "pretraining"
    assert (run / "provenance.jsonl").is_file() and (run / "config.yaml").is_file()


def test_resume_after_an_interruption_reaches_the_uninterrupted_weights(small_builtin, pretrain_config, tmp_path):
    config = pretrain_config.replace(augment=True)  # the augmentation stream must resume too
    straight = tmp_path / "straight"
    pretrain(config, straight, progress=False)

    def stop_after_two(epoch):
        if epoch == 2:
            raise Interrupt()

    interrupted = tmp_path / "interrupted"
    with pytest.raises(Interrupt):
        pretrain(config, interrupted, progress=False, on_epoch=stop_after_two)
    pretrain(config, interrupted, resume=True, progress=False)
    a = load_checkpoint(straight / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(interrupted / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert (straight / "metrics.jsonl").read_text().count("\n") == (interrupted / "metrics.jsonl").read_text().count("\n")


def test_a_second_start_in_the_same_directory_is_refused(small_builtin, pretrain_config, tmp_path):
    pretrain(pretrain_config.replace(pretrain_epochs=1), tmp_path / "pre", progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain(pretrain_config.replace(pretrain_epochs=1), tmp_path / "pre", progress=False)


def test_a_non_finite_loss_stops_with_the_last_checkpoint_kept(small_builtin, pretrain_config, tmp_path):
    config = pretrain_config.replace(pretrain_schedule="constant", pretrain_epochs=2)
    run = tmp_path / "pre"

    def stop_after_one(epoch):
        raise Interrupt()

    with pytest.raises(Interrupt):
        pretrain(config, run, progress=False, on_epoch=stop_after_one)
    saved = load_checkpoint(run / "checkpoints" / "last.pt")
    for group in saved["optimizer"]["param_groups"]:
        group["lr"] = 1e30  # a step that overflows the weights
    torch.save(saved, run / "checkpoints" / "last.pt")
    with pytest.raises(TrainingStopped, match="epoch 2: the training loss is nan; the checkpoint of epoch 1 is intact"):
        pretrain(config, run, resume=True, progress=False)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 1


def test_maml_starts_from_the_pretrained_backbone_with_a_zero_head(small_builtin, pretrain_config, tmp_path):
    pretrain(pretrain_config.replace(pretrain_epochs=1), tmp_path / "pre", progress=False)
    weights = load_checkpoint(tmp_path / "pre" / "checkpoints" / "best.pt")["model"]
    config = pretrain_config.replace(init=str(tmp_path / "pre"), adapt="atoms")
    torch.manual_seed(0)
    model = create_backbone("conv4", conv="acdc-net", atoms=4, num_classes=3, in_channels=3, image_size=20,
                            track_running_stats=False)
    record = initialise_from_pretrained(model, config)
    state = model.state_dict()
    assert all(torch.equal(state[name], weights[name]) for name in state if not name.startswith("head."))
    assert all(not state[name].any() for name in state if name.startswith("head."))
    assert record["head_start"] == "zero" and record["epoch"] == 1 and len(record["sha256"]) == 64
    summary = train(config, tmp_path / "maml", progress=False)  # every scope can start from it
    assert summary["status"] == "finished"
    assert '"event": "init"' in (tmp_path / "maml" / "provenance.jsonl").read_text()


def test_a_mismatched_checkpoint_is_refused_naming_both_sides(small_builtin, pretrain_config, tmp_path):
    pretrain(pretrain_config.replace(pretrain_epochs=1), tmp_path / "pre", progress=False)
    config = pretrain_config.replace(init=str(tmp_path / "pre"), atoms=8)
    model = create_backbone("conv4", conv="acdc-net", atoms=8, num_classes=3, in_channels=3, image_size=20,
                            track_running_stats=False)
    with pytest.raises(ConfigError, match=r"pretrained as backbone conv4, conv acdc-net, size 4, but this run is "
                                          r"backbone conv4, conv acdc-net, size 8; .* change size"):
        initialise_from_pretrained(model, config)
    with pytest.raises(CheckpointError, match="no checkpoints/best.pt there"):
        initialise_from_pretrained(model, config.replace(init=str(tmp_path)))


def test_a_meta_trained_checkpoint_is_not_taken_for_a_pretrained_one(small_builtin, tiny_config, tmp_path):
    train(tiny_config, tmp_path / "maml", progress=False)
    model = create_backbone("conv4", conv="acdc-net", atoms=4, num_classes=3, in_channels=3, image_size=20,
                            track_running_stats=False)
    with pytest.raises(CheckpointError, match="not a pretraining checkpoint"):
        initialise_from_pretrained(model, tiny_config.replace(init=str(tmp_path / "maml" / "checkpoints" / "best.pt")))


def test_pretrain_then_init_then_evaluate_chain_and_no_meta_training(small_builtin, pretrain_config, tmp_path):
    pretrain(pretrain_config.replace(pretrain_epochs=1), tmp_path / "pre", progress=False)
    train(pretrain_config.replace(init=str(tmp_path / "pre")), tmp_path / "maml", progress=False)
    [meta_trained] = evaluate_run(tmp_path / "maml", device="cpu")
    [baseline] = score_pretrained(tmp_path / "pre", tmp_path / "baseline",
                                  {"adapt": "head", "inner_lr": 0.5, "inner_steps_eval": 5, "device": "cpu"})
    assert baseline["episodes"] == meta_trained["episodes"] == 4
    assert baseline["episode_set"] == meta_trained["episode_set"]  # paired: the same test episodes
    summary = json.loads((tmp_path / "baseline" / "summary.json").read_text())
    assert summary["iterations"] == 0 and summary["adapt"] == "head" and summary["best_iteration"] == 0
    with pytest.raises(ConfigError, match="iterations must be >= 1"):
        pretrain_config.replace(iterations=0)


def test_both_entry_points_can_mirror_their_metrics_to_tensorboard(small_builtin, pretrain_config, tiny_config,
                                                                      tmp_path):
    pytest.importorskip("tensorboard")  # a dev dependency: installed wherever the tests run
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    pretrain(pretrain_config.replace(pretrain_epochs=2, tensorboard=True), tmp_path / "pre", progress=False)
    train(tiny_config.replace(tensorboard=True), tmp_path / "maml", progress=False)
    for run, tag, steps in ((tmp_path / "pre", "heldout_accuracy", [1, 2]), (tmp_path / "maml", "meta_loss",
                                                                              [1, 2, 3, 4, 5, 6])):
        events = EventAccumulator(str(run / "tensorboard"))
        events.Reload()
        assert [event.step for event in events.Scalars(tag)] == steps
    lines = [json.loads(line) for line in (tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in EventAccumulator(str(tmp_path / "pre" / "tensorboard")).Reload().Scalars("val_accuracy")] \
        == pytest.approx([line["val_accuracy"] for line in lines])


def test_tensorboard_without_the_package_is_one_clear_error(monkeypatch, tiny_config, tmp_path):
    import builtins
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(RuntimeError, match="tensorboard: true needs the tensorboard package.*pip install tensorboard"):
        train(tiny_config.replace(tensorboard=True), tmp_path / "maml", progress=False)


def test_evaluate_cli_scores_a_pretrained_backbone_and_pretrain_cli_refuses_init(small_builtin, pretrain_config,
                                                                                tmp_path, capsys):
    from fewshot_acdc.cli.evaluate import main as evaluate_main
    from fewshot_acdc.cli.pretrain import main as pretrain_main
    pretrain(pretrain_config.replace(pretrain_epochs=1), tmp_path / "pre", progress=False)
    assert evaluate_main(["--pretrained", str(tmp_path / "pre"), "--adapt", "head", "--inner-lr", "0.5",
                          "--inner-steps-eval", "3", "--device", "cpu", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "test 3-way 1-shot, no meta-training" in out and str(tmp_path / "pre") + "-no-meta-head" in out
    with pytest.raises(SystemExit):
        evaluate_main(["--run", str(tmp_path / "pre"), "--adapt", "head"])  # a meta-trained run keeps its scope
    with pytest.raises(SystemExit):
        pretrain_main(["--dataset", "builtin", "--init", str(tmp_path / "pre")])
    assert "--init starts meta-training" in capsys.readouterr().err


def test_a_resume_that_fails_leaves_config_yaml_as_the_checkpoints_run_had_it(small_builtin, pretrain_config, tmp_path,
                                                                            monkeypatch):
    run = tmp_path / "pre"

    def stop(epoch):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        pretrain(pretrain_config.replace(pretrain_epochs=2), run, progress=False, on_epoch=stop)
    before = (run / "config.yaml").read_text()

    def fails(*args, **kwargs):  # the resumed epoch fails before its checkpoint
        raise RuntimeError("stopped in the epoch")
    scoring = pretraining._few_shot_accuracies
    monkeypatch.setattr(pretraining, "_few_shot_accuracies", fails)
    with pytest.raises(RuntimeError, match="stopped in the epoch"):
        pretrain(pretrain_config.replace(pretrain_epochs=2, threads=1), run, resume=True, progress=False)
    assert (run / "config.yaml").read_text() == before
    monkeypatch.setattr(pretraining, "_few_shot_accuracies", scoring)
    pretrain(pretrain_config.replace(pretrain_epochs=2, threads=1), run, resume=True, progress=False)
    assert "threads: 1" in (run / "config.yaml").read_text()
