"""Episode evaluation: the logic behind ``evaluate.py --run <dir>``.

A checkpoint is scored on a fixed, saved set of test episodes (600 by default), so every model
evaluated with the same ``episode_set`` saw exactly the same episodes and results can be paired
episode by episode (see :mod:`fewshot_acdc.results`); each eval file lists every episode's
identity (:func:`fewshot_acdc.data.fixed.episode_identity`) so that pairing can check it.

A recorded result is never replaced by another protocol's: the run's own protocol (its
``inner_steps_eval`` and ``test_episodes``, the best checkpoint) writes
``eval/<split>_<ways>way_<shots>shot.json``, any other one a file of its own under
``eval/protocols/`` whose name and ``protocol`` field say what differed. The destination is
checked to be writable before anything is scored.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import torch
from torch import nn

from ..utils import PathError, WriteError
from . import provenance
from .builders import build_maml, build_model, resolve_device
from .checkpoint import load_checkpoint
from .directory import RunDirectory, resume_config
from .distributed import SINGLE_PROCESS, ProcessGroup
from .record import BenchmarkRecord, EvaluationContext, EvaluationRecord, mean_ci95


def score_episodes(maml, episodes: Iterable, device: torch.device, batch_size: Optional[int] = 1,
                   steps: Optional[int] = None) -> List[float]:
    """Query accuracy after adaptation for each episode (no second-order graph, no_grad scoring),
    in order, after ``steps`` inner steps (default: the engine's ``inner_steps_eval``).
    ``batch_size`` episodes are adapted together (:meth:`MAML.evaluate_episodes`; ``None``: its
    default, 1 on a CPU, a memory-bounded stack on a GPU). Episodes are drawn from ``episodes``
    one stack at a time, so a progress bar wrapped around it still advances."""
    if batch_size == 1:
        return [maml.evaluate_episode(episode.to(device), steps)[1] for episode in episodes]
    iterator = iter(episodes)
    accuracies: List[float] = []
    size = batch_size
    while True:
        if size is None:  # the default depends on the episodes' shapes: look at the first one
            first = next(iterator, None)
            if first is None:
                return accuracies
            size = maml.evaluation_batch_size(first.to(device))
            stack = [first] + list(itertools.islice(iterator, size - 1))
        else:
            stack = list(itertools.islice(iterator, size))
        if not stack:
            return accuracies
        accuracies += [accuracy for _, accuracy in
                       maml.evaluate_episodes([episode.to(device) for episode in stack], steps, batch_size=size)]


def score_episode_set(maml, episodes: Sequence, device: torch.device, batch_size: Optional[int],
                      group: ProcessGroup = SINGLE_PROCESS,
                      around: Callable[[Iterable], Iterable] = lambda items: items,
                      steps: Optional[int] = None) -> List[float]:
    """:func:`score_episodes` of a fixed, indexable episode set, split across the ranks of
    ``group``: each rank scores its contiguous share and the accuracies are gathered in episode
    order, so every rank returns the list one process would (episodes are scored independently
    of each other). ``around(episodes)``: what this rank's episodes pass through (a progress
    bar, fault points)."""
    if not group.is_distributed:
        return score_episodes(maml, around(episodes), device, batch_size, steps)
    share = group.share(len(episodes))
    local = score_episodes(maml, around(episodes[index] for index in share), device, batch_size, steps) if share else []
    return group.gather_in_order(local)


def widen_head(model: nn.Module, num_classes: int) -> None:
    """Give a model meta-trained for K-way episodes an N-way head.

    Every new row (and bias) is the mean of the learned rows: the head starts permutation-
    invariant over classes, as MAML's learned head is in expectation, and the inner loop adapts it
    to the episode's classes. Used for Omniglot's 20-way benchmark with 5-way-trained models.
    """
    head = model.head
    if head.out_features == num_classes:
        return
    wide = nn.Linear(head.in_features, num_classes).to(head.weight.device, head.weight.dtype)
    with torch.no_grad():
        wide.weight.copy_(head.weight.mean(0, keepdim=True).expand(num_classes, -1))
        wide.bias.fill_(float(head.bias.mean()))
    model.head = wide


def evaluation_maml(config, model: nn.Module, state: Dict[str, object], ways: int):
    """The MAML engine of a trained model for ``ways``-way episodes, with its learned step sizes.

    A wider head (:func:`widen_head`) gets per-element (Meta-SGD) head step sizes made like its
    weights: every new row is the mean of the learned rows.
    """
    widen_head(model, ways)
    maml = build_maml(config, model)
    learned = dict(state.get("step_sizes", {}))
    own = maml.step_sizes.state_dict()
    for key, value in learned.items():
        if key in own and own[key].shape != value.shape and value.dim() >= 1 and own[key].shape[1:] == value.shape[1:]:
            learned[key] = value.mean(0, keepdim=True).expand_as(own[key]).clone()
    maml.step_sizes.load_state_dict(learned)
    return maml


# The BatchNorm a run used (config key batchnorm), recorded with every evaluation: numbers computed
# with batch statistics of the query set (transductive) and with running statistics at test time
# are not comparable.
BATCHNORM = {
    "transductive": "transductive: batch statistics of the support set in the inner loop and of the query set when scored",
    "per-step": "per-step (MAML++): BN weights per inner step, running statistics of that step at test time",
}


def evaluation_context(config) -> EvaluationContext:
    """What an evaluation's number depends on besides the episodes: BatchNorm, the inner loop's
    step sizes, and the code and machine that computed it."""
    return EvaluationContext(batchnorm=BATCHNORM[config.batchnorm], adapt=config.adapt, inner_lr=config.inner_lr,
                             learn_inner_lr=config.learn_inner_lr, head_init=config.head_init,
                             created=provenance.created_now(),
                             source=provenance.recorded_revision(), machine=provenance.machine())


def load_trained(run_dir: Union[str, Path], checkpoint: str, device: torch.device, in_channels: int,
                 overrides: Optional[Dict[str, object]] = None):
    """Config, model with the checkpoint's weights, and a MAML engine for evaluation."""
    run = RunDirectory(run_dir)
    config = resume_config(run.root, overrides)
    state = load_checkpoint(run.checkpoint(checkpoint), map_location=device)
    model = build_model(config, in_channels).to(device)
    model.load_state_dict(state["model"])
    return config, model, state


def evaluate_run(
    run_dir: Union[str, Path],
    *,
    checkpoint: str = "best",
    shots: Optional[Sequence[int]] = None,
    ways: Optional[int] = None,
    episodes: Optional[int] = None,
    inner_steps_eval: Optional[int] = None,
    split: str = "test",
    data_root: Optional[str] = None,
    device: str = "auto",
    eval_batch: Optional[int] = None,
    progress: bool = False,
    distributed: ProcessGroup = SINGLE_PROCESS,
    allow_dirty: bool = False,
    on_record: Optional[Callable[[Dict[str, object], Path], None]] = None,
) -> List[Dict[str, object]]:
    """Score ``checkpoint`` of ``run_dir`` on fixed ``split`` episodes; write one eval file per
    shot count and return their contents.
    ``eval_batch``: episodes adapted together (default: the run's ``eval_batch``; see
    :func:`score_episodes`). ``distributed``: under torchrun every rank calls this, scores its
    share of the episodes (:func:`score_episode_set`) and rank 0 writes the files, equal to one
    process's. ``on_record(record, path)`` is called as each file is written (to print it at once).

    ``episodes``, ``inner_steps_eval`` or ``checkpoint`` other than the run's own write
    ``eval/protocols/<split>_<ways>way_<shots>shot_<what differs>.json`` and leave the run's
    result in place (:func:`eval_destination`). Raises PathError before scoring when the
    destination cannot be written, WriteError naming the unsaved result when writing fails
    after scoring, and UncommittedChangesError as :func:`.training.train` does."""
    if ways is not None and ways < 2:  # every query would carry the one label
        raise ValueError(f"--ways must be >= 2 (a 1-way episode is scored 100% by any model), got {ways}")
    if episodes is not None and episodes < 1:
        raise ValueError(f"--episodes must be >= 1 (the fixed episodes scored per shot count), got {episodes}")
    provenance.check_recordable("evaluation", allow_dirty)
    from .data import open_split
    run = RunDirectory(run_dir)
    recorded = resume_config(run.root)
    protocol = evaluation_protocol(recorded, checkpoint=checkpoint, episodes=episodes,
                                   inner_steps_eval=inner_steps_eval)
    overrides: Dict[str, object] = {"device": device}
    if inner_steps_eval is not None:
        overrides["inner_steps_eval"] = inner_steps_eval
    if data_root is not None:
        overrides["data_root"] = data_root
    if eval_batch is not None:
        overrides["eval_batch"] = eval_batch
    torch_device = distributed.device if distributed.device is not None else resolve_device(device)
    dataset = open_split(resume_config(run.root, overrides), split)
    config, model, state = load_trained(run.root, checkpoint, torch_device, dataset.channels, overrides)
    ways = ways or config.ways
    destinations = {shot_count: eval_destination(run, split, ways, shot_count, protocol)
                    for shot_count in shots or (config.shots,)}
    if distributed.is_main:
        for path in destinations.values():
            check_writable(path)
    maml = evaluation_maml(config, model, state, ways)
    results = []
    for shot_count, destination in destinations.items():
        count = episodes if episodes is not None else config.test_episodes
        episode_set = _shared_episode_set(config, dataset, ways, shot_count, count, split, distributed)
        around = lambda items: items  # noqa: E731
        if progress and distributed.is_main:
            from tqdm import tqdm
            total = len(distributed.share(len(episode_set)))
            around = lambda items: tqdm(items, total=total, desc=f"{split} {ways}-way {shot_count}-shot",  # noqa: E731
                                        dynamic_ncols=True)
        accuracies = score_episode_set(maml, episode_set, torch_device, config.eval_batch, distributed, around)
        record = EvaluationRecord.from_accuracies(
            accuracies, dataset=config.dataset, seed=config.seed, split=split, ways=ways, shots=shot_count,
            queries=config.queries_eval, episode_set=episode_set.name, inner_steps_eval=config.inner_steps_eval,
            checkpoint=checkpoint, checkpoint_iteration=state["iteration"], protocol=protocol,
            episode_identities=tuple(episode_set.identities()), context=evaluation_context(config)).to_json()
        if distributed.is_main:
            try:
                run.write_json(destination, record)
            except OSError as error:
                raise WriteError(destination, _NotSaved(error, record)) from None
        results.append(record)
        if on_record is not None:
            on_record(record, destination)
    return results


def evaluation_protocol(recorded, *, checkpoint: str = "best", episodes: Optional[int] = None,
                        inner_steps_eval: Optional[int] = None) -> Optional[str]:
    """What an evaluation does differently from the run's own protocol (``recorded``: its saved
    config), e.g. ``"inner_steps_eval=0, episodes=100"``; None when nothing: the run's number."""
    parts = []
    if inner_steps_eval is not None and inner_steps_eval != recorded.inner_steps_eval:
        parts.append(f"inner_steps_eval={inner_steps_eval}")
    if episodes is not None and episodes != recorded.test_episodes:
        parts.append(f"episodes={episodes}")
    if checkpoint != "best":
        parts.append(f"checkpoint={checkpoint}")
    return ", ".join(parts) or None


def eval_destination(run: RunDirectory, split: str, ways: int, shots: int, protocol: Optional[str]) -> Path:
    """``eval/<split>_<ways>way_<shots>shot.json`` for the run's own protocol, else
    ``eval/protocols/<split>_<ways>way_<shots>shot_<protocol>.json`` (e.g.
    ``..._inner_steps_eval0_episodes100.json``): the results module reads the first as the run's
    number, so another protocol never replaces it."""
    if protocol is None:
        return run.eval_file(split, ways, shots)
    tag = "_".join(part.replace("=", "") for part in protocol.split(", "))
    return run.eval_dir / "protocols" / f"{split}_{ways}way_{shots}shot_{tag}.json"


def check_writable(path: Path) -> None:
    """Raise PathError unless a file can be created in ``path``'s folder (made if missing), so that
    an evaluation of minutes does not end in a result it cannot save."""
    import tempfile
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise PathError(error.errno, f"cannot write {path}: {error.strerror or error}; nothing was evaluated. "
                                     "Make the run directory writable, or evaluate a copy of it", path) from None


class _NotSaved(Exception):
    """The reason a scored result could not be written, with the result, for WriteError's message."""

    def __init__(self, error: OSError, record: Dict[str, object]) -> None:
        self.errno = getattr(error, "errno", None)
        self.strerror = (f"{getattr(error, 'strerror', None) or error}; the result, not saved: "
                         f"{record['split']} {record['ways']}-way {record['shots']}-shot "
                         f"{100 * record['mean_accuracy']:.2f}% +- {100 * record['ci95']:.2f}% "
                         f"({record['episodes']} episodes, set {record['episode_set']})")
        super().__init__(self.strerror)


def _shared_episode_set(config, dataset, ways: int, shots: int, count: int, split: str, distributed: ProcessGroup):
    """The saved fixed episode set, the same on every rank: rank 0 draws and saves a missing one,
    the others wait for it and read it."""
    from .data import evaluation_episodes
    if not distributed.is_main:
        distributed.barrier()
    episode_set = evaluation_episodes(config, dataset, ways, shots, count, split=split)
    if distributed.is_main:
        distributed.barrier()
    return episode_set


def select_inner_steps(
    run_dir: Union[str, Path],
    candidates: Sequence[int],
    *,
    ways: Optional[int] = None,
    shots: int = 1,
    episodes: int = 100,
    checkpoint: str = "best",
    device: str = "auto",
    eval_batch: Optional[int] = None,
    distributed: ProcessGroup = SINGLE_PROCESS,
    allow_dirty: bool = False,
) -> Dict[str, object]:
    """Choose the evaluation's inner steps on the validation split, not on the test.

    Scores ``checkpoint`` on the same fixed ``ways``-way ``shots``-shot validation episodes with
    each of ``candidates`` steps and picks the most accurate (the fewest steps on a tie). Writes
    ``eval/selection/inner-steps_val_<ways>way_<shots>shot.json`` with each candidate's mean and
    95% CI and the choice (a sub-folder: not among the eval files the results module reads), and
    returns its contents; ``chosen`` is what to pass as ``inner_steps_eval`` to the
    test evaluation. Adaptation from the same start with more steps is not monotone (the inner
    step size was meta-learned for the training steps), hence measured, not assumed.
    """
    from .data import open_split
    steps = sorted(set(int(step) for step in candidates))
    if not steps or steps[0] < 0:
        raise ValueError(f"candidates must be inner step counts >= 0, got {list(candidates)!r}")
    if ways is not None and ways < 2:
        raise ValueError(f"ways must be >= 2 (a 1-way episode is scored 100% by any model), got {ways}")
    if episodes < 1:
        raise ValueError(f"--select-episodes must be >= 1, got {episodes}")
    provenance.check_recordable("evaluation", allow_dirty)
    run = RunDirectory(run_dir)
    overrides: Dict[str, object] = {"device": device}
    if eval_batch is not None:
        overrides["eval_batch"] = eval_batch
    torch_device = distributed.device if distributed.device is not None else resolve_device(device)
    dataset = open_split(resume_config(run.root, overrides), "val")
    config, model, state = load_trained(run.root, checkpoint, torch_device, dataset.channels, overrides)
    ways = ways or config.ways
    maml = evaluation_maml(config, model, state, ways)
    episode_set = _shared_episode_set(config, dataset, ways, shots, episodes, "val", distributed)
    scored = []
    for step in steps:
        mean, ci95, _ = mean_ci95(score_episode_set(maml, episode_set, torch_device, config.eval_batch, distributed,
                                                    steps=step))
        scored.append({"inner_steps_eval": step, "mean_accuracy": mean, "ci95": ci95})
    chosen = max(scored, key=lambda row: (row["mean_accuracy"], -row["inner_steps_eval"]))["inner_steps_eval"]
    selection = {"split": "val", "ways": ways, "shots": shots, "episodes": len(episode_set),
                 "episode_set": episode_set.name, "checkpoint": checkpoint,
                 "checkpoint_iteration": state["iteration"], "candidates": scored, "chosen": chosen,
                 **evaluation_context(config).to_json()}
    if distributed.is_main:
        run.write_json(run.eval_dir / "selection" / f"inner-steps_val_{ways}way_{shots}shot.json", selection)
    return selection


def evaluate_omniglot_all_runs(
    run_dir: Union[str, Path],
    *,
    all_runs: Optional[Union[str, Path]] = None,
    checkpoint: str = "best",
    inner_steps_eval: Optional[int] = None,
    five_way_episodes_per_run: int = 30,
    device: str = "auto",
    eval_batch: Optional[int] = None,
    distributed: ProcessGroup = SINGLE_PROCESS,
    allow_dirty: bool = False,
) -> Dict[str, object]:
    """Score a run on Lake et al.'s 20-way within-alphabet one-shot benchmark (``all_runs``).

    Writes ``eval/omniglot-all-runs.json`` (the benchmark's error rate: per run, the fraction of
    its 20 test images assigned the wrong class, averaged over the 20 runs) and
    ``eval/all-runs_5way_1shot.json`` (5-way 1-shot accuracy on 600 episodes drawn within the
    runs' alphabets). A model meta-trained for 5-way episodes gets a 20-way head by
    :func:`widen_head` for the 20-way benchmark. Under torchrun (``distributed``) the ranks
    split the episodes and rank 0 writes the files.
    """
    from ..data import all_runs_episodes, find_all_runs, load_omniglot_all_runs
    provenance.check_recordable("evaluation", allow_dirty)
    run = RunDirectory(run_dir)
    overrides: Dict[str, object] = {"device": device}
    if inner_steps_eval is not None:
        overrides["inner_steps_eval"] = inner_steps_eval
    if eval_batch is not None:
        overrides["eval_batch"] = eval_batch
    config = resume_config(run.root, overrides)
    if config.dataset != "omniglot":
        raise ValueError(f"{run.root} was trained on {config.dataset!r}; the all_runs benchmark needs an Omniglot model")
    # the folder (or file) found, or the one given: load_omniglot_all_runs looks inside it
    location = Path(all_runs) if all_runs else find_all_runs(data_root=config.data_root)
    torch_device = distributed.device if distributed.device is not None else resolve_device(device)
    runs = load_omniglot_all_runs(location, image_size=config.image_size)

    # 20-way benchmark.
    config, model, state = load_trained(run.root, checkpoint, torch_device, 1, overrides)
    accuracies = score_episode_set(evaluation_maml(config, model, state, runs[0].support_labels.shape[0]), runs,
                                   torch_device, config.eval_batch, distributed)
    # Each run is one episode (20 supports, 20 queries), so its error is 1 - query accuracy:
    # the benchmark's per-run fraction of misclassified test images.
    per_run_error = [1.0 - accuracy for accuracy in accuracies]
    benchmark = BenchmarkRecord.from_errors(
        per_run_error, inner_steps_eval=config.inner_steps_eval, checkpoint=checkpoint,
        checkpoint_iteration=state["iteration"], seed=config.seed, context=evaluation_context(config)).to_json()
    if distributed.is_main:
        run.write_json(run.eval_dir / "omniglot-all-runs.json", benchmark)

    # 5-way 1-shot episodes drawn within the runs' alphabets.
    config, model, state = load_trained(run.root, checkpoint, torch_device, 1, overrides)
    episodes = all_runs_episodes(runs, ways=5, episodes_per_run=five_way_episodes_per_run, seed=0)
    accuracies = score_episode_set(evaluation_maml(config, model, state, 5), list(episodes), torch_device,
                                   config.eval_batch, distributed)
    five_way = EvaluationRecord.from_accuracies(
        accuracies, dataset="omniglot", seed=config.seed, split="all-runs", ways=5, shots=1, queries=1,
        episode_set=f"omniglot-all-runs-5w1s1q-seed0-{len(accuracies)}", inner_steps_eval=config.inner_steps_eval,
        checkpoint=checkpoint, checkpoint_iteration=state["iteration"], context=evaluation_context(config))
    if distributed.is_main:
        run.write_json(run.eval_file("all-runs", 5, 1), five_way.to_json())
    benchmark["five_way_accuracy"], benchmark["five_way_ci95"] = five_way.mean_accuracy, five_way.ci95
    return benchmark


def backfill_episode_identities(path: Union[str, Path], *, data_root: Optional[str] = None,
                                episode_dir: Optional[str] = None) -> str:
    """Add ``episode_identities`` to an eval file written before they were recorded, without
    scoring anything again: the episodes are those of the saved set the file names, which is a
    function of (dataset, split, ways, shots, queries, seed 0), so it is loaded (or drawn again)
    and checked to carry the file's ``episode_set`` name before its identities are written in.
    Returns what was done: ``"added"``, ``"present"`` or ``"skipped: <why>"``. Raises ValueError
    when the set found now is not the one the file names (another dataset or layout)."""
    import json

    from ..data import FixedEpisodeSet
    from .data import open_split
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    record = EvaluationRecord.from_json(data, path)
    if record.episode_identities is not None:
        return "present"
    if record.split not in ("train", "val", "test") or None in (record.ways, record.shots, record.queries,
                                                                   record.episode_set):
        return f"skipped: not a fixed episode set of a dataset split ({record.episode_set or 'no episode_set'})"
    run_dir = path.parent.parent if path.parent.name == "eval" else path.parent.parent.parent
    overrides = {key: value for key, value in (("data_root", data_root), ("episode_dir", episode_dir))
                 if value is not None}
    config = resume_config(run_dir, overrides)
    dataset = open_split(config, record.split)
    episode_set = FixedEpisodeSet.load_or_create(dataset, record.ways, record.shots, record.queries,
                                                 episodes=len(record.per_episode_accuracy), seed=0,
                                                 cache_dir=config.episode_dir)
    if episode_set.name != record.episode_set:
        raise ValueError(f"{path} names episode set {record.episode_set} but the data found now gives "
                         f"{episode_set.name}: point --data-root at the data it was scored on")
    identities = [{"index": index, "hash": digest} for index, digest in episode_set.identities()]
    out: Dict[str, object] = {}
    for key, value in data.items():
        out[key] = value
        if key == "per_episode_accuracy":
            out["episode_identities"] = identities
    RunDirectory(run_dir).write_json(path, out)
    return "added"
