"""Meta-training: the loop behind ``run_maml.py``.

One call of :func:`train` trains (or resumes) one run directory. Every ``val_every`` meta-steps
it scores the fixed validation episodes, writes ``checkpoints/last.pt`` (and ``best.pt`` when
validation improved) atomically, and appends a line to ``metrics.jsonl``. A non-finite or
exploding meta-loss stops the run with an error naming the iteration; the checkpoints on disk
are those of the last good interval.

Resuming reproduces an uninterrupted run: training episodes are a pure function of
``(seed, iteration)`` and the checkpoint carries the model, Adam's state and torch's RNG state
(atom-drop masks come from it), the metrics lines up to its iteration and the sums of the log
interval it fell in. ``checkpoints/last.pt`` is the one commit point: what follows it (best.pt,
the metrics line) is redone from it on resume if an interruption came in between, and what came
after it is dropped and recomputed, identically. A lock keeps a second process out of the
directory; what a resume may change is in :mod:`.resume`. Guarantees: docs/run_directory.md.

Under ``torchrun`` (a :class:`~.distributed.ProcessGroup` passed as ``distributed``) every rank
trains on its share of each meta-batch and :func:`outer_step` all-reduces the meta-gradient
before clipping and stepping, so all ranks hold the single-process state; validation episodes
are split across the ranks and gathered in order; rank 0 alone takes the lock and writes the run
directory. Guide: docs/distributed.md.
"""
from __future__ import annotations

import math
import resource
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Dict, Optional, Union

import torch

from ..config import ConfigError, TrainConfig, load_saved_config
from ..faults import arm as arm_faults
from ..faults import disarm as disarm_faults
from ..faults import fault_point, fault_points
from ..meta import NonFiniteLossError
from . import provenance
from .builders import build_maml, build_model, build_optimizer, build_scheduler, resolve_device
from .checkpoint import (checkpoint_iteration, copy_checkpoint, load_checkpoint, restore_rng_state, rng_state,
                         save_checkpoint)
from .data import evaluation_episodes, open_split, training_batches
from .directory import ConfigRecord, MetricsLog, RunDirectory, resume_config  # noqa: F401  (resume_config: re-exported)
from .distributed import SINGLE_PROCESS, ProcessGroup
from .evaluation import score_episode_set
from .interrupts import DeferredInterrupt
from .record import TrainingFailure, TrainingSummary, mean_ci95
from .resume import apply_changes, describe, resume_changes

# Cross-entropy starts near ln(ways) (1.6 for 5-way); a meta-loss above this means logits of
# order 1e3: the run has diverged and further steps only waste compute.
EXPLODING_META_LOSS = 1e3


class TrainingStopped(RuntimeError):
    """Training stopped on a bad meta-loss; the message names the iteration and the checkpoint kept."""


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def train(
    config: TrainConfig,
    run_dir: Union[str, Path],
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: Optional[Callable[[int], None]] = None,
    distributed: ProcessGroup = SINGLE_PROCESS,
    allow_dirty: bool = False,
) -> Dict[str, object]:
    """Train ``config`` in ``run_dir`` (or resume it from ``checkpoints/last.pt``).

    ``on_step(iteration)`` is called after each completed meta-step (tests use it to interrupt;
    a ``KeyboardInterrupt`` from it saves the state, as a Ctrl-C does).
    ``distributed``: this process's rank in a torchrun job (:func:`.distributed.start`); every
    rank calls :func:`train` with the same arguments, and rank 0 alone writes ``run_dir``.
    Returns the summary written to ``summary.json``.
    Raises RunLockedError while another process trains in ``run_dir``, and
    :class:`~.provenance.UncommittedChangesError`, before anything is written, when the package
    code has uncommitted changes and neither ``allow_dirty`` nor ``FEWSHOT_ALLOW_DIRTY=1`` allows
    recording from it.
    """
    provenance.check_recordable("training run", allow_dirty)
    run = RunDirectory(run_dir)
    arm_faults()
    try:
        with (run.lock(notify=_note) if distributed.is_main else nullcontext()), DeferredInterrupt() as interrupt:
            if distributed.is_main:
                for path in run.remove_temporaries():
                    _note(f"removed {path}, left by an interrupted write")
            return _train(config, run, resume=resume, progress=progress, on_step=on_step, interrupt=interrupt,
                          group=distributed)
    finally:
        disarm_faults()


def _tensorboard(config: TrainConfig, run: RunDirectory):
    """The TensorBoard mirror of metrics.jsonl when the config asks for one, else None."""
    if not config.tensorboard:
        return None
    from .tensorboard import TensorBoardLog
    return TensorBoardLog(run.root)


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)


def _train(config: TrainConfig, run: RunDirectory, *, resume: bool, progress: bool,
           on_step: Optional[Callable[[int], None]], interrupt: DeferredInterrupt,
           group: ProcessGroup) -> Dict[str, object]:
    device = group.device if group.device is not None else resolve_device(config.device)
    main = group.is_main
    note = _note if main else (lambda message: None)  # one copy of each note, from rank 0
    start_iteration, best_val, best_iteration = 0, -math.inf, 0
    state: Optional[Dict[str, object]] = None
    if resume and run.checkpoint("last").exists():
        state = load_checkpoint(run.checkpoint("last"))
    elif resume:
        # Stopped before its first checkpoint: nothing was committed, and a run is a function of
        # its config, so running it from iteration 0 is resuming it.
        note(f"{run.checkpoint('last')} does not exist yet: {run.root} starts again from iteration 0")
    elif run.checkpoint("last").exists():
        raise FileExistsError(
            f"{run.root} already holds a run (checkpoints/last.pt); pass --resume to continue it or choose another --out"
        )
    changes = []
    if state is not None:
        saved = state.get("config") or _saved_config(run)
        changes = list(state.get("config_changes", [])) + resume_changes(saved, config, state["iteration"])
        if len(changes) > len(state.get("config_changes", [])):
            note(f"resuming at iteration {state['iteration']} with "
                  f"{describe(changes[len(state.get('config_changes', [])):])}")
    metrics_log = MetricsLog(run.metrics, writable=main, mirror=_tensorboard(config, run) if main else None)
    config_record = ConfigRecord(run, config, resumed=state is not None, writable=main)
    if main:
        provenance.record(run.root, "resume" if state is not None else "start",
                          iteration=state["iteration"] if state is not None else 0, world_size=group.world_size,
                          **({"config_changes": changes} if changes else {}))
        if run.summary.exists():  # a previous attempt's summary (e.g. failed) no longer describes the run
            run.summary.unlink()

    # Rank 0 first: opening a split may fill the data cache and the episode set may be drawn and
    # saved; the other ranks then read what it wrote instead of writing it too.
    if not main:
        group.barrier()
    train_split = open_split(config, "train")
    val_split = open_split(config, "val")
    validation = evaluation_episodes(config, val_split, config.ways, config.shots, config.val_episodes)
    if main:
        group.barrier()

    torch.manual_seed(config.seed)
    model = build_model(config, train_split.channels).to(device)
    if config.init is not None and state is None:  # a resumed run's weights are its checkpoint's
        from .pretraining import initialise_from_pretrained
        started_from = initialise_from_pretrained(model, config)
        if main:
            provenance.record(run.root, "init", **started_from)
    maml = build_maml(config, model)
    optimizer = build_optimizer(config, maml)
    scheduler = build_scheduler(config, optimizer)
    if state is not None:
        model.load_state_dict(state["model"])
        maml.step_sizes.load_state_dict(state.get("step_sizes", {}))
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        restore_rng_state(state["rng"])
        start_iteration, best_val, best_iteration = state["iteration"], state["best_val_accuracy"], state["best_iteration"]
        apply_changes(changes, optimizer)
        for message in metrics_log.restore(state.get("metrics"), start_iteration, run.checkpoint("last")):
            note(message)
        if main and best_iteration == start_iteration and \
                checkpoint_iteration(run.checkpoint("best")) != start_iteration:
            # Stopped between committing last.pt and copying it to best.pt: finish the copy.
            copy_checkpoint(run.checkpoint("last"), run.checkpoint("best"))
    else:
        for message in metrics_log.reset():
            note(message)
    if group.is_distributed:  # every rank must hold the same state: the same checkpoint, the same initialisation
        group.check_same([start_iteration, float(sum(p.detach().double().sum() for p in maml.meta_parameters()))],
                         "model state")

    def checkpoint_state(iteration: int) -> Dict[str, object]:
        return {"model": model.state_dict(), "step_sizes": maml.step_sizes.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None, "rng": rng_state(),
                "iteration": iteration, "best_val_accuracy": best_val, "best_iteration": best_iteration,
                # What makes the resumed run the same run: the lines up to here (so they cannot be
                # lost or doubled), the log interval in progress, and the config trained with.
                "metrics": metrics_log.text(),
                "interval": {"loss": interval_loss, "accuracy": interval_accuracy, "steps": interval_steps,
                             "seconds": time.perf_counter() - interval_start,
                             "diagnostics": {"steps": diagnostics.steps, "sums": diagnostics.sums}},
                "config": config.to_dict(), "config_changes": changes}

    def commit(iteration: int) -> None:
        """last.pt is the commit; best.pt (a copy of it) and the metrics file derive from it.
        Rank 0's alone (the ranks hold the same state); no collective, so it may run when
        another rank has stopped."""
        if not main:
            return
        config_record.before_commit()
        save_checkpoint(run.checkpoint("last"), checkpoint_state(iteration))
        fault_point("committed")
        if best_iteration == iteration:
            copy_checkpoint(run.checkpoint("last"), run.checkpoint("best"))
        metrics_log.flush()

    bar = None
    if progress and main:
        from tqdm import tqdm
        bar = tqdm(total=config.iterations, initial=start_iteration, desc="meta-train", dynamic_ncols=True)
    interval_loss, interval_accuracy, interval_steps, interval_seconds = 0.0, 0.0, 0, 0.0
    diagnostics = DiagnosticsInterval()
    if state is not None and state.get("interval") is not None:
        # The checkpoint fell inside a log interval (a Ctrl-C): continue it, so that its line
        # averages the same steps as in the uninterrupted run.
        interval = state["interval"]
        interval_loss, interval_accuracy, interval_steps = interval["loss"], interval["accuracy"], interval["steps"]
        interval_seconds = interval["seconds"]
        diagnostics.steps, diagnostics.sums = interval["diagnostics"]["steps"], interval["diagnostics"]["sums"]
    interval_start = time.perf_counter() - interval_seconds
    elapsed_before = sum(r.get("seconds_interval", 0.0) for r in metrics_log.records())
    last_saved = start_iteration
    last_val: Optional[float] = None  # the latest validation accuracy, for the progress bar
    iteration = start_iteration
    consistent: Optional[int] = None  # set where the state is exactly that after a meta-step
    stopped_early: Optional[int] = None  # the iteration the plateau rule stopped at
    if config.iterations == 0 and start_iteration == 0 and not run.checkpoint("last").exists():
        # A pretrained backbone with no meta-training (--init, iterations 0): its validation,
        # checkpoint and summary, so that evaluation and the results table treat it as any run.
        accuracies = score_episode_set(maml, validation, device, config.eval_batch, group)
        best_val, val_ci95, _ = mean_ci95(accuracies)
        best_iteration = 0
        metrics_log.add({"iteration": 0, "val_accuracy": best_val, "val_ci95": val_ci95,
                         "val_episodes": len(accuracies), "peak_memory_mb": peak_memory_mb(device)})
        commit(0)
    interrupt.active = True
    try:
        share = group.share(config.meta_batch)
        for iteration, episodes in training_batches(config, train_split, start_iteration, device, share):
            try:
                stats = outer_step(maml, episodes, optimizer, scheduler, config.grad_clip, iteration,
                                   distributed=group, meta_batch=config.meta_batch)
            except NonFiniteLossError as error:
                raise TrainingStopped(_stop_message(run, iteration, str(error), last_saved)) from error
            if not math.isfinite(stats["meta_loss"]) or stats["meta_loss"] > EXPLODING_META_LOSS:
                raise TrainingStopped(_stop_message(
                    run, iteration, f"meta-loss {stats['meta_loss']:.4g} (non-finite or above {EXPLODING_META_LOSS:g})",
                    last_saved))
            interval_loss += stats["meta_loss"]
            interval_accuracy += stats["accuracy"]
            interval_steps += 1
            diagnostics.add(stats)
            validate = iteration % config.val_every == 0 or iteration == config.iterations
            if iteration % config.log_every == 0 or validate:
                seconds = time.perf_counter() - interval_start
                record = {"iteration": iteration, "meta_loss": interval_loss / interval_steps,
                          "train_accuracy": interval_accuracy / interval_steps,
                          "seconds": elapsed_before + seconds, "seconds_interval": seconds,
                          "seconds_per_step": seconds / interval_steps,
                          "peak_memory_mb": peak_memory_mb(device),
                          "meta_lr": optimizer.param_groups[0]["lr"], **diagnostics.mean()}
                diagnostics = DiagnosticsInterval()
                if validate:
                    accuracies = score_episode_set(maml, validation, device, config.eval_batch, group,
                                                   around=lambda share: fault_points(share, "validation"))
                    mean, ci95, _ = mean_ci95(accuracies)
                    record.update(val_accuracy=mean, val_ci95=ci95, val_episodes=len(accuracies))
                    last_val = mean
                    if mean > best_val:
                        best_val, best_iteration = mean, iteration
                metrics_log.add(record)
                elapsed_before += seconds
                interval_loss, interval_accuracy, interval_steps = 0.0, 0.0, 0
                interval_start = time.perf_counter()
                if validate:
                    commit(iteration)  # after the line and the interval's reset, which it records
                    last_saved = iteration
                    if plateaued(metrics_log.records(), config.plateau_validations):
                        stopped_early = iteration
                metrics_log.flush()
            if bar is not None:
                # After this step's validation, so the bar's last state shows the validation that
                # the final log line reports (set before it, it showed the previous one). A dict,
                # because tqdm sorts keyword postfixes.
                bar.update(1)
                bar.set_postfix({"loss": f"{stats['meta_loss']:.3f}", "acc": f"{stats['accuracy']:.3f}",
                                 "val": f"{last_val:.3f}" if last_val is not None else "-",
                                 "best": f"{best_val:.3f}" if best_val > -math.inf else "-"})
            consistent = iteration
            fault_point("step")
            if on_step is not None:
                on_step(iteration)
            if interrupt.requested:
                raise KeyboardInterrupt
            consistent = None
            if stopped_early is not None:
                note(f"validation has plateaued (no gain above the best earlier validation's 95% CI in the last "
                     f"{config.plateau_validations} validations): stopped at iteration {iteration}")
                break
    except KeyboardInterrupt:
        # Saved only where the state is that after a whole meta-step (a first Ctrl-C waits for
        # one); raised anywhere else (a second Ctrl-C), the last checkpoint stays, which resumes
        # to the same run.
        if consistent is not None and consistent > last_saved:
            commit(consistent)
        raise
    except TrainingStopped as error:
        if main:
            run.write_json(run.summary, TrainingFailure(error=str(error), iteration=iteration,
                                                        world_size=group.world_size).to_json())
        raise
    finally:
        interrupt.active = False
        if bar is not None:
            bar.close()

    metrics = metrics_log.records()
    steps_timed = [r for r in metrics if "seconds_per_step" in r]
    summary = TrainingSummary(
        backbone=config.backbone, conv=config.conv, size=config.size,
        group_size=config.group_size, adapt=config.adapt, first_order=config.first_order,
        head_init=config.head_init, dataset=config.dataset, ways=config.ways, shots=config.shots, image_size=config.image_size,
        iterations=config.iterations, seed=config.seed,
        total_parameters=sum(p.numel() for p in model.parameters()),
        adapted_parameters=maml.adapted_parameter_count,
        # Meta-training time only (validation excluded), over every step of the run.
        seconds_per_meta_step=(sum(r["seconds_interval"] for r in steps_timed) / steps_timed[-1]["iteration"]
                               if steps_timed else None),
        peak_memory_mb=max((r["peak_memory_mb"] for r in metrics), default=None),
        best_val_accuracy=best_val, best_iteration=best_iteration, device=device.type,
        config_changes=tuple(changes),
        # Processes that trained it (this start; provenance.jsonl has each start's): the tasks of a
        # meta-batch were split across them, the update is the same.
        world_size=group.world_size,
        stopped_early=stopped_early,
    ).to_json()
    if main:
        config_record.before_commit()  # a resume with no step left commits its changes here
        run.write_json(run.summary, summary)
    # No rank returns before rank 0 has written everything: what comes next (the test evaluation,
    # a resume) reads the checkpoints on every rank.
    group.barrier()
    return summary


def plateaued(records, patience: Optional[int]) -> bool:
    """The stopping rule ``plateau_validations`` (``patience``): True when none of the last
    ``patience`` validations in ``records`` (metrics.jsonl lines) beats the best earlier one by
    more than that one's 95% CI, i.e. validation no longer improves beyond its own noise."""
    if patience is None:
        return False
    validations = [(r["val_accuracy"], r.get("val_ci95", 0.0)) for r in records if "val_accuracy" in r]
    if len(validations) <= patience:
        return False
    best, ci95 = max(validations[:-patience])
    return max(accuracy for accuracy, _ in validations[-patience:]) <= best + ci95


def outer_step(maml, episodes, optimizer: torch.optim.Optimizer, scheduler, grad_clip: Optional[float],
               iteration: int, distributed: ProcessGroup = SINGLE_PROCESS,
               meta_batch: Optional[int] = None) -> Dict[str, object]:
    """One meta-step: the meta-gradient from the algorithm, then what the trainer owns: the
    all-reduce of a data-parallel run (``episodes`` is then this rank's share of a meta-batch of
    ``meta_batch`` tasks), clipping, the optimizer step and the learning-rate schedule (a
    non-finite meta-gradient raises before any of them, with the gradients cleared, on every
    rank alike)."""
    optimizer.zero_grad(set_to_none=True)
    if distributed.is_distributed:
        if meta_batch is None:
            raise ValueError("a data-parallel outer_step needs meta_batch: episodes are only this rank's share")
        stats = distributed.reduce_meta_gradient(maml, episodes, iteration, meta_batch)
    else:
        stats = maml.meta_gradient(episodes, iteration)
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(maml.meta_parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return stats


class DiagnosticsInterval:
    """Means over a log interval of the per-step diagnostics :meth:`MAML.meta_gradient` returns:
    support loss before each inner update, meta-gradient norm per role, inner gradient norm
    per role and step. What a user reads first when a run does not learn."""

    def __init__(self) -> None:
        self.steps = 0
        self.sums: Dict[str, object] = {}

    def add(self, stats: Dict[str, object]) -> None:
        self.steps += 1
        for key in ("support_loss_by_step", "support_loss_after", "grad_norm_by_role", "inner_grad_norm_by_role"):
            self.sums[key] = _add_nested(self.sums.get(key), stats[key])

    def mean(self) -> Dict[str, object]:
        return {key: _scale_nested(value, 1.0 / self.steps) for key, value in self.sums.items()} if self.steps else {}


def _add_nested(total, value):
    if total is None:
        return value
    if isinstance(value, dict):
        return {key: _add_nested(total.get(key), item) for key, item in value.items()}
    if isinstance(value, list):
        return [a + b for a, b in zip(total, value)]
    return total + value


def _scale_nested(value, factor: float):
    if isinstance(value, dict):
        return {key: _scale_nested(item, factor) for key, item in value.items()}
    if isinstance(value, list):
        return [item * factor for item in value]
    return value * factor


def _stop_message(run: RunDirectory, iteration: int, problem: str, last_saved: int) -> str:
    kept = (f"the last good checkpoint {run.checkpoint('last')} (iteration {last_saved}) is intact"
            if last_saved > 0 else "no checkpoint had been written yet")
    return (f"training stopped at iteration {iteration}: {problem}; {kept}. "
            "Lower --meta-lr or --inner-lr, set grad_clip, or use --first-order, then --resume or start anew.")


def _saved_config(run: RunDirectory) -> Dict[str, object]:
    """config.yaml as saved, for checkpoints from before they recorded their config."""
    try:
        return load_saved_config(run.config).to_dict()
    except ConfigError:
        return {}

