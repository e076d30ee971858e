"""Supervised pretraining: the loop behind ``pretrain.py``.

The backbone of a MAML run (same :class:`~fewshot_acdc.config.TrainConfig`, same builders, same
data) is trained with a linear classifier over every class of the training split. Per class, the
last ``pretrain_holdout`` images (in the split's order, so a rotated Omniglot class holds out the
same drawings as its upright one) are held out to measure generalisation; the other images are
the training set. Every epoch ends with

* the held-out accuracy on the training classes (with its 95% CI over the held-out images), and
* the few-shot accuracy of a nearest-centroid classifier on the backbone's features, over the
  fixed validation episodes that meta-training validates on (the same file: paired numbers),

then a checkpoint: ``checkpoints/last.pt`` is the commit point, ``best.pt`` the epoch with the
best few-shot accuracy (the one ``run_maml.py --init`` and ``evaluate.py`` use). The run directory
is the one meta-training uses (:class:`.directory.RunDirectory`: lock, atomic writes,
``metrics.jsonl`` restored from the checkpoint, ``provenance.jsonl``, ``summary.json``).

Resuming is exact: the order of an epoch's images and its augmentation are functions of
``(seed, epoch)``, and the checkpoint carries model, optimiser, schedule, torch's RNG state and
the metrics lines. An interruption mid-epoch loses that epoch's progress only.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..nn.scaling import learning_rate_scales
from . import provenance
from .builders import build_model, make_optimizer, resolve_device
from .checkpoint import checkpoint_iteration, copy_checkpoint, load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from .data import evaluation_episodes, open_split
from .directory import ConfigRecord, MetricsLog, RunDirectory
from .interrupts import DeferredInterrupt
from .record import mean_ci95
from .resume import describe, resume_changes
from .training import TrainingStopped, _note, _tensorboard, peak_memory_mb

SUMMARY_KIND = "pretraining"  # summary.json's "kind": what the results module and --init look for


def holdout_split(labels: np.ndarray, num_classes: int, holdout: int) -> Tuple[np.ndarray, np.ndarray]:
    """(training image indices, held-out image indices): the last ``holdout`` images of every
    class, in index order, are held out. Raises ValueError naming a class left without a
    training image."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=num_classes)
    train, held = [], []
    for label, indices in enumerate(np.split(order, np.cumsum(counts)[:-1])):
        if len(indices) <= holdout:
            raise ValueError(f"class {label} has {len(indices)} images: pretrain_holdout {holdout} leaves none to "
                             f"train on; lower pretrain_holdout")
        train.append(indices[:len(indices) - holdout])
        held.append(indices[len(indices) - holdout:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)


def epoch_batches(train_indices: np.ndarray, batch: int, seed: int, epoch: int) -> list:
    """The batches of ``epoch`` (1-based): a permutation that depends only on ``(seed, epoch)``.
    A final batch of a single image is dropped (BatchNorm needs two)."""
    generator = np.random.default_rng([seed, epoch])
    order = train_indices[generator.permutation(len(train_indices))]
    batches = [order[start:start + batch] for start in range(0, len(order), batch)]
    return [b for b in batches if len(b) >= 2]


def pretraining_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, images: torch.Tensor,
                     labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """One supervised step on a batch: cross-entropy over every training class, backward, optimiser
    and schedule step. Returns ``(loss, correct)``, both detached on the model's device: nothing is
    read on the host (an epoch sums them there and reads the sums once, at its end;
    tests/runs/test_pretraining.py runs this step on the ``meta`` device to hold it to that)."""
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach(), (logits.detach().argmax(1) == labels).sum()


def nearest_centroid_accuracy(model: torch.nn.Module, episode, ways: Optional[int] = None) -> torch.Tensor:
    """Accuracy of a nearest-centroid classifier (Euclidean, on ``model.embed``'s features) on one
    episode, as a 0-dim tensor. Support and query pass through the network together, as MAML's
    batch-statistics BatchNorm sees them. ``ways`` (labels ``0..ways-1``): give it for labels on an
    accelerator, where reading it off the labels would be a host synchronisation per episode."""
    images = torch.cat([episode.support_images, episode.query_images])
    features = model.embed(images)
    support, query = features[:len(episode.support_labels)], features[len(episode.support_labels):]
    if ways is None:
        ways = int(episode.support_labels.max()) + 1
    labels = episode.support_labels
    centroids = support.new_zeros(ways, support.shape[1]).index_add_(0, labels, support)
    # Counted by index_add_, not bincount, whose output size depends on the labels' values.
    counts = support.new_zeros(ways).index_add_(0, labels, support.new_ones(len(labels)))
    centroids = centroids / counts.unsqueeze(1)
    predictions = torch.cdist(query, centroids).argmin(1)
    return (predictions == episode.query_labels).double().mean()


def pretrain(config: TrainConfig, run_dir: Union[str, Path], *, resume: bool = False, progress: bool = True,
             on_epoch: Optional[Callable[[int], None]] = None, allow_dirty: bool = False) -> Dict[str, object]:
    """Pretrain ``config``'s backbone in ``run_dir`` (or resume it from ``checkpoints/last.pt``).

    ``on_epoch(epoch)`` is called after each committed epoch (tests interrupt with it).
    Returns the summary written to ``summary.json``. Raises RunLockedError while another
    process uses ``run_dir``, TrainingStopped on a non-finite loss (the last epoch's checkpoint
    is kept), UncommittedChangesError as :func:`.training.train` does."""
    provenance.check_recordable("pretraining run", allow_dirty)
    run = RunDirectory(run_dir)
    with run.lock(notify=_note), DeferredInterrupt() as interrupt:
        for path in run.remove_temporaries():
            _note(f"removed {path}, left by an interrupted write")
        return _pretrain(config, run, resume=resume, progress=progress, on_epoch=on_epoch, interrupt=interrupt)


def _pretrain(config: TrainConfig, run: RunDirectory, *, resume: bool, progress: bool,
              on_epoch: Optional[Callable[[int], None]], interrupt: DeferredInterrupt) -> Dict[str, object]:
    device = resolve_device(config.device)
    state: Optional[Dict[str, object]] = None
    if resume and run.checkpoint("last").exists():
        state = load_checkpoint(run.checkpoint("last"))
    elif resume:
        _note(f"{run.checkpoint('last')} does not exist yet: {run.root} starts again from epoch 0")
    elif run.checkpoint("last").exists():
        raise FileExistsError(
            f"{run.root} already holds a run (checkpoints/last.pt); pass --resume to continue it or choose another --out")
    changes = []
    if state is not None:
        changes = list(state.get("config_changes", [])) + resume_changes(state["config"], config, state["iteration"])
        if len(changes) > len(state.get("config_changes", [])):
            _note(f"resuming at epoch {state['iteration']} with {describe(changes[len(state.get('config_changes', [])):])}")

    train_split = open_split(config, "train")
    val_split = open_split(config, "val")
    validation = evaluation_episodes(config, val_split, config.ways, config.shots, config.val_episodes)
    try:
        train_indices, heldout_indices = holdout_split(train_split.labels, train_split.num_classes,
                                                       config.pretrain_holdout)
    except ValueError as error:
        raise TrainingStopped(f"{train_split.identifier} train split: {error}") from None

    # Written once the inputs are known to be usable, so a refused start leaves no directory behind
    # (a resume's config.yaml only with its first checkpoint: ConfigRecord).
    config_record = ConfigRecord(run, config, resumed=state is not None)
    provenance.record(run.root, "resume" if state is not None else "start", kind=SUMMARY_KIND,
                      iteration=state["iteration"] if state is not None else 0,
                      **({"config_changes": changes} if changes else {}))
    if run.summary.exists():
        run.summary.unlink()
    metrics_log = MetricsLog(run.metrics, mirror=_tensorboard(config, run))

    torch.manual_seed(config.seed)
    model = build_model(config, train_split.channels, num_classes=train_split.num_classes).to(device)
    optimizer = make_optimizer(config.pretrain_optimizer, dict(model.named_parameters()), config.pretrain_lr,
                               config.pretrain_weight_decay, config.momentum,
                               learning_rate_scales(model, config.lr_scaling, config.pretrain_optimizer))
    steps_per_epoch = len(epoch_batches(train_indices, config.pretrain_batch, config.seed, 1))
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.pretrain_epochs * steps_per_epoch)
                 if config.pretrain_schedule == "cosine" else None)
    start_epoch, best_val, best_epoch = 0, -math.inf, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        restore_rng_state(state["rng"])
        start_epoch, best_val, best_epoch = state["iteration"], state["best_val_accuracy"], state["best_iteration"]
        for message in metrics_log.restore(state.get("metrics"), start_epoch, run.checkpoint("last")):
            _note(message)
        if best_epoch == start_epoch and checkpoint_iteration(run.checkpoint("best")) != start_epoch:
            copy_checkpoint(run.checkpoint("last"), run.checkpoint("best"))
    else:
        for message in metrics_log.reset():
            _note(message)

    def commit(epoch: int) -> None:
        config_record.before_commit()
        save_checkpoint(run.checkpoint("last"), {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None, "rng": rng_state(),
            "iteration": epoch, "best_val_accuracy": best_val, "best_iteration": best_epoch,
            "metrics": metrics_log.text(), "config": config.to_dict(), "config_changes": changes,
            "kind": SUMMARY_KIND, "num_classes": train_split.num_classes})
        if best_epoch == epoch:
            copy_checkpoint(run.checkpoint("last"), run.checkpoint("best"))
        metrics_log.flush()

    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=config.pretrain_epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch,
                   desc="pretrain", dynamic_ncols=True)
    elapsed_before = sum(r.get("seconds_epoch", 0.0) for r in metrics_log.records())
    interrupt.active = True
    try:
        for epoch in range(start_epoch + 1, config.pretrain_epochs + 1):
            started = time.perf_counter()
            model.train()
            augment = np.random.default_rng([config.seed, epoch, 1])
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.float64, device=device)
            seen = 0
            for batch in epoch_batches(train_indices, config.pretrain_batch, config.seed, epoch):
                generator = torch.Generator().manual_seed(int(augment.integers(2**62)))
                images = train_split.load_images(batch, augment=config.augment, generator=generator).to(device)
                labels = torch.as_tensor(train_split.labels[batch], device=device)
                loss, hits = pretraining_step(model, optimizer, scheduler, images, labels)
                loss_sum += loss.double() * len(batch)
                correct += hits.double()
                seen += len(batch)
                if bar is not None:
                    bar.update(1)
            train_loss = float(loss_sum) / seen  # one host sync per epoch
            if not math.isfinite(train_loss):
                kept = (f"the checkpoint of epoch {epoch - 1} is intact" if epoch > 1
                        else "no checkpoint had been written yet")
                raise TrainingStopped(f"pretraining stopped in epoch {epoch}: the training loss is {train_loss}; {kept}. "
                                      "Lower --pretrain-lr, then --resume or start anew.")
            seconds = time.perf_counter() - started
            model.eval()  # no atom-drop while measuring
            heldout, heldout_ci95 = _heldout_accuracy(model, train_split, heldout_indices, device)
            val_accuracies = _few_shot_accuracies(model, validation, device, config.ways)
            val, val_ci95, _ = mean_ci95(val_accuracies)
            if val > best_val:
                best_val, best_epoch = val, epoch
            elapsed_before += seconds
            metrics_log.add({"iteration": epoch, "epoch": epoch, "train_loss": train_loss,
                             "train_accuracy": float(correct) / seen, "heldout_accuracy": heldout,
                             "heldout_ci95": heldout_ci95, "heldout_images": len(heldout_indices),
                             "val_accuracy": val, "val_ci95": val_ci95, "val_episodes": len(val_accuracies),
                             "lr": optimizer.param_groups[0]["lr"] / optimizer.param_groups[0].get("scale", 1.0),
                             "seconds": elapsed_before, "seconds_epoch": seconds,
                             "peak_memory_mb": peak_memory_mb(device)})
            commit(epoch)
            if bar is not None:
                bar.set_postfix({"loss": f"{train_loss:.3f}", "heldout": f"{heldout:.3f}", "val": f"{val:.3f}"})
            if on_epoch is not None:
                on_epoch(epoch)
            if interrupt.requested:
                raise KeyboardInterrupt
    finally:
        interrupt.active = False
        if bar is not None:
            bar.close()

    records = metrics_log.records()
    best = next(r for r in records if r["epoch"] == best_epoch)
    summary = {
        "status": "finished", "kind": SUMMARY_KIND, "backbone": config.backbone, "conv": config.conv,
        "size": config.size, "group_size": config.group_size, "dataset": config.dataset,
        "image_size": config.image_size, "classes": train_split.num_classes, "train_images": len(train_indices),
        "heldout_images": len(heldout_indices), "epochs": config.pretrain_epochs, "seed": config.seed,
        "optimizer": config.pretrain_optimizer, "lr": config.pretrain_lr, "weight_decay": config.pretrain_weight_decay,
        "lr_scaling": config.lr_scaling, "schedule": config.pretrain_schedule, "augment": config.augment,
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "backbone_parameters": sum(p.numel() for name, p in model.named_parameters() if not name.startswith("head.")),
        "seconds_per_epoch": sum(r["seconds_epoch"] for r in records) / len(records),
        "peak_memory_mb": max(r["peak_memory_mb"] for r in records),
        "best_val_accuracy": best_val, "best_epoch": best_epoch, "val_ways": config.ways, "val_shots": config.shots,
        "heldout_accuracy": records[-1]["heldout_accuracy"], "heldout_ci95": records[-1]["heldout_ci95"],
        "heldout_accuracy_at_best": best["heldout_accuracy"], "final_train_loss": records[-1]["train_loss"],
        "device": device.type, "config_changes": changes,
    }
    config_record.before_commit()  # a resume with no epoch left commits its changes here
    run.write_json(run.summary, summary)
    return summary


@torch.no_grad()
def _heldout_accuracy(model, dataset, indices: np.ndarray, device: torch.device, batch: int = 256) -> Tuple[float, float]:
    """Accuracy on the held-out images and its 95% CI (normal approximation over images)."""
    if len(indices) == 0:
        return float("nan"), float("nan")
    correct = []
    for start in range(0, len(indices), batch):
        chunk = indices[start:start + batch]
        logits = model(dataset.load_images(chunk).to(device))
        correct.append((logits.argmax(1) == torch.as_tensor(dataset.labels[chunk], device=device)).double())
    hits = torch.cat(correct).cpu().numpy()
    mean, ci95, _ = mean_ci95(hits.tolist())
    return mean, ci95


@torch.no_grad()
def _few_shot_accuracies(model, episodes, device: torch.device, ways: int) -> list:
    return torch.stack([nearest_centroid_accuracy(model, episode.to(device), ways)
                        for episode in episodes]).cpu().tolist()  # one host read for all episodes


def load_pretrained_backbone(path: Union[str, Path]) -> Tuple[Dict[str, torch.Tensor], Dict[str, object], Path, int]:
    """The backbone weights (every tensor but the classifier's) of a pretraining run directory
    (its ``best.pt``) or checkpoint, the config it was trained with, the checkpoint used and its
    epoch. Raises CheckpointError for a file that is not a pretraining checkpoint."""
    from .checkpoint import CheckpointError
    path = Path(path)
    checkpoint = path / "checkpoints" / "best.pt" if path.is_dir() else path
    if path.is_dir() and not checkpoint.is_file():
        raise CheckpointError(f"--init {path}: no checkpoints/best.pt there; is it a pretraining run directory "
                              "(pretrain.py --out) that finished an epoch?")
    state = load_checkpoint(checkpoint)
    if state.get("kind") != SUMMARY_KIND:
        raise CheckpointError(f"--init {checkpoint}: not a pretraining checkpoint (pretrain.py writes those; a MAML "
                              "run's checkpoint is resumed with --resume)")
    weights = {name: tensor for name, tensor in state["model"].items() if not name.startswith("head.")}
    return weights, dict(state.get("config") or {}), checkpoint, state["iteration"]


# What must agree between a pretraining run and the model it initialises (the weights' layout).
_INIT_IDENTITY = ("backbone", "conv", "size", "group_size")


def initialise_from_pretrained(model: torch.nn.Module, config: TrainConfig) -> Dict[str, object]:
    """Load ``config.init``'s backbone weights into ``model`` and zero its classifier (a task's N
    ways are not the pretraining classes; a zero head treats every class alike at the start of a
    task, the choice of Ye & Chao 2022 and of Triantafillou et al. 2020's fo-Proto-MAML
    comparison). Returns what to record: the checkpoint, its sha256 and epoch, the head's start.
    Raises ConfigError naming both sides when the checkpoint was trained with another backbone,
    conv kind or size."""
    import hashlib

    from ..config import ConfigError, config_from_values
    weights, saved, checkpoint, epoch = load_pretrained_backbone(config.init)
    pretrained = config_from_values(saved, where=f"the config in {checkpoint}")
    theirs = {key: getattr(pretrained, key) for key in _INIT_IDENTITY}
    ours = {key: getattr(config, key) for key in _INIT_IDENTITY}
    different = [key for key in _INIT_IDENTITY if theirs[key] != ours[key]]
    if different:
        def show(values):
            return ", ".join(f"{key} {values[key]}" for key in _INIT_IDENTITY if values[key] is not None)
        raise ConfigError(f"--init {checkpoint} was pretrained as {show(theirs)}, but this run is {show(ours)}; "
                          f"pretrain the same network (pretrain.py with these flags) or change "
                          f"{', '.join(different)}")
    own = model.state_dict()
    unexpected = sorted(set(weights) - set(own))
    missing = sorted(name for name in set(own) - set(weights) if not name.startswith("head."))
    mismatched = sorted(name for name in weights if name in own and weights[name].shape != own[name].shape)
    if unexpected or missing or mismatched:
        problem = (f"shapes differ for {mismatched[0]} ({tuple(weights[mismatched[0]].shape)} in the checkpoint, "
                   f"{tuple(own[mismatched[0]].shape)} here)" if mismatched else
                   f"tensors {'only in the checkpoint: ' + ', '.join(unexpected[:3]) if unexpected else ''}"
                   f"{'; missing from it: ' + ', '.join(missing[:3]) if missing else ''}")
        raise ConfigError(f"--init {checkpoint} does not fit this {config.backbone} ({problem}); "
                          "check image_size, the dataset's channels and batchnorm against the pretraining run")
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.startswith("head."):
                tensor.zero_()
            else:
                tensor.copy_(weights[name])
    return {"checkpoint": str(checkpoint), "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
            "epoch": epoch, "head_start": "zero"}


def score_pretrained(pretrain_dir: Union[str, Path], out: Union[str, Path], overrides: Dict[str, object],
                     shots=None, progress: bool = False, allow_dirty: bool = False) -> list:
    """Score a pretraining run with no meta-training: a MAML run of 0 meta-steps in ``out`` that
    starts from ``pretrain_dir`` (:func:`initialise_from_pretrained`: zero head) and fine-tunes
    ``overrides['adapt']`` on each support set at test time, then its test evaluation (eval files
    in ``out``, read by the results module like any run's). Returns the evaluation records."""
    from .directory import resume_config
    from .evaluation import evaluate_run
    from .training import train
    config = resume_config(Path(pretrain_dir), {**overrides, "init": str(pretrain_dir), "iterations": 0})
    train(config, out, progress=False, allow_dirty=allow_dirty)
    return evaluate_run(out, shots=shots, device=config.device, progress=progress, allow_dirty=allow_dirty)
