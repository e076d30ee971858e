"""Data-parallel meta-training and evaluation under ``torchrun`` (guide: docs/distributed.md).

Meta-learning parallelises over tasks: each of ``WORLD_SIZE`` processes (ranks) adapts its share
of every meta-batch, and the meta-gradients are summed (weighted by share size) before the outer
step, so every rank takes the same optimizer step as one process on the whole meta-batch would.
Nothing here is home-made: ``torchrun`` starts the processes and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` and the rendezvous; :func:`start` joins the process group
(gloo on CPUs, NCCL on GPUs with device ``cuda:LOCAL_RANK``).

What is replicated: the model, the step sizes, Adam's state, the schedule and torch's RNG stream
(every rank applies the same reduced update, so they stay equal; a start-up check compares them).
What is split: the tasks of each meta-batch (contiguous shares, :meth:`ProcessGroup.share`; each
rank builds only its own episodes) and the fixed validation/test episodes (gathered back in
episode order). Rank 0 alone writes the run directory.

A single process without torchrun's variables gets :data:`SINGLE_PROCESS`, whose methods are the
identity: training is then exactly what it was before this module existed.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from ..meta import NonFiniteLossError
from ..vocabulary import DISTRIBUTED_TIMEOUT_SECONDS as DEFAULT_TIMEOUT_SECONDS


_PHASES = ("support", "query", "meta-gradient")


class DistributedSetupError(ValueError):
    """torchrun's processes cannot train this config (world size, devices); says what to change."""


class RankFailedError(RuntimeError):
    """Another rank failed at a point where every rank must agree; names the rank."""


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the job: passed explicitly to the trainer and the evaluation.

    ``device`` is where this rank computes (``cuda:LOCAL_RANK`` under NCCL); ``None`` for a single
    process, which resolves its device from the config as always.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None
    device: Optional[torch.device] = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the run directory and prints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def communication_device(self) -> torch.device:
        """Where collective tensors live: the GPU for NCCL, the CPU for gloo."""
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def share(self, count: int, rank: Optional[int] = None) -> range:
        """Rank ``rank``'s (default: this one's) contiguous share of ``count`` items (tasks of a
        meta-batch, episodes of an evaluation): the first ``count % world_size`` ranks get one more."""
        rank = self.rank if rank is None else rank
        base, extra = divmod(count, self.world_size)
        start = rank * base + min(rank, extra)
        return range(start, start + base + (1 if rank < extra else 0))

    # ------------------------------------------------------------------ collectives
    def barrier(self) -> None:
        if self.is_distributed:
            torch.distributed.barrier()

    def gather_in_order(self, values: Sequence) -> List:
        """Every rank's list of ``values`` for its :meth:`share`, concatenated in rank order, on
        every rank: the single-process list when the shares cover the items in order."""
        if not self.is_distributed:
            return list(values)
        gathered: List[Optional[List]] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, list(values))
        return [value for part in gathered for value in part]

    def check_same(self, fingerprint: Sequence[float], what: str) -> None:
        """Raise on every rank if the ranks' ``fingerprint`` differ (e.g. they read different
        checkpoints: several nodes whose run directory is not one shared folder)."""
        if not self.is_distributed:
            return
        gathered: List[Optional[List[float]]] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, list(fingerprint))
        different = [rank for rank, value in enumerate(gathered) if value != gathered[0]]
        if different:
            raise RankFailedError(
                f"rank(s) {', '.join(map(str, different))} start from a different {what} than rank 0 "
                f"({gathered[different[0]]} vs {gathered[0]}): every rank must read the same run directory "
                "(on several nodes, a shared file system) and the same code")

    def reduce_meta_gradient(self, maml, episodes: Sequence, iteration: int, meta_batch: int) -> Dict[str, object]:
        """:meth:`MAML.meta_gradient` on this rank's share ``episodes`` of a meta-batch of
        ``meta_batch`` tasks, made into the whole meta-batch's: the gradients and statistics of
        every rank summed with weight ``share / meta_batch`` (the mean over all tasks, also for
        uneven shares), the gradient norms recomputed from the summed gradient.

        Non-finite losses: the ranks first agree whether any share failed; if one did, every rank
        clears its gradients and raises the :class:`NonFiniteLossError` of the first failing task
        of the whole meta-batch (the one a single process would name), before any optimizer step.

        Atom-drop masks: each rank draws its share's masks from its own stream, seeded from one
        number of the shared stream, so the ranks' RNG states stay equal whatever the shares (the
        state rank 0 checkpoints is every rank's) and no two ranks draw the same masks. (With atom
        drop the masks thus depend on the world size; without, the step equals a single
        process's to float rounding.)
        """
        share = self.share(meta_batch)
        if len(episodes) != len(share):
            raise ValueError(f"rank {self.rank} got {len(episodes)} episodes for its share of {len(share)} tasks")
        parameters = maml.meta_parameters()
        failure: Optional[NonFiniteLossError] = None
        stats: Optional[Dict[str, object]] = None
        seed = int(torch.randint(0, 2**62, (1,)))  # the shared stream: the same number on every rank
        forked = [self.device] if self.device is not None and self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=forked):
            torch.manual_seed(int(np.random.SeedSequence([seed, self.rank]).generate_state(1, np.uint64)[0]) >> 1)
            try:
                stats = maml.meta_gradient(episodes, iteration)
            except NonFiniteLossError as error:
                failure = error

        status = torch.zeros(self.world_size, 6, dtype=torch.float64)
        if failure is not None:
            task = share.start + (failure.task or 0)
            status[self.rank] = torch.tensor([1.0, task, _PHASES.index(failure.phase),
                                              -1.0 if failure.step is None else failure.step,
                                              -1.0 if failure.steps is None else failure.steps, failure.value],
                                             dtype=torch.float64)
        status = self._all_reduce(status)
        failed = [rank for rank in range(self.world_size) if status[rank, 0] > 0]
        if failed:
            for parameter in parameters:
                parameter.grad = None
            if failure is not None and failed[0] == self.rank:
                failure.task, failure.tasks = share.start + (failure.task or 0), meta_batch
                raise NonFiniteLossError(failure.phase, failure.value, task=failure.task, step=failure.step,
                                         steps=failure.steps, tasks=meta_batch, during_meta_step=True) from failure
            _, task, phase, step, steps, value = status[failed[0]].tolist()
            raise NonFiniteLossError(_PHASES[int(phase)], value, task=int(task),
                                     step=None if step < 0 else int(step), steps=None if steps < 0 else int(steps),
                                     tasks=meta_batch, during_meta_step=True)

        weight = len(share) / meta_batch
        present = torch.tensor([parameter.grad is not None for parameter in parameters], dtype=torch.float64)
        layout, values = _flatten(stats, ("meta_loss", "accuracy", "support_loss", "support_loss_by_step",
                                          "support_loss_after", "inner_grad_norm_by_role"))
        summed = self._all_reduce(torch.cat([present, weight * torch.tensor(values, dtype=torch.float64)]))
        present, values = summed[:len(parameters)] > 0, summed[len(parameters):].tolist()
        self._sum_gradients([p for p, kept in zip(parameters, present) if kept], weight)
        for parameter, kept in zip(parameters, present):
            if not kept:
                parameter.grad = None
        reduced = dict(stats)
        reduced.update(_unflatten(layout, values))
        reduced["grad_norm_by_role"], reduced["grad_norm"] = maml.meta_gradient_norms()
        if not np.isfinite(reduced["grad_norm"]):
            for parameter in parameters:
                parameter.grad = None
            raise NonFiniteLossError("meta-gradient", reduced["grad_norm"], during_meta_step=True)
        return reduced

    def _all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        device = self.communication_device
        moved = tensor.to(device)
        torch.distributed.all_reduce(moved)
        return moved.cpu() if device.type != "cpu" else moved

    def _sum_gradients(self, parameters: Sequence[torch.Tensor], weight: float) -> None:
        """``grad <- sum over ranks of weight_rank * grad_rank``, one flat buffer per dtype (a rank
        whose share left a gradient unset contributes zeros)."""
        by_dtype: Dict[torch.dtype, List[torch.Tensor]] = {}
        for parameter in parameters:
            by_dtype.setdefault(parameter.dtype, []).append(parameter)
        for group in by_dtype.values():
            flat = torch.cat([(parameter.grad if parameter.grad is not None else torch.zeros_like(parameter))
                              .reshape(-1) for parameter in group]) * weight
            torch.distributed.all_reduce(flat)
            offset = 0
            for parameter in group:
                count = parameter.numel()
                parameter.grad = flat[offset:offset + count].view_as(parameter).clone()
                offset += count


SINGLE_PROCESS = ProcessGroup()


def _flatten(stats: Mapping[str, object], keys: Sequence[str]):
    """Numbers of ``stats[keys]`` (floats, lists, dicts of lists) as one list, and the layout to
    rebuild them (identical on every rank: same model, same config)."""
    layout, values = [], []
    for key in keys:
        value = stats[key]
        if isinstance(value, dict):
            layout.append((key, [(name, len(item)) for name, item in sorted(value.items())]))
            for _, item in sorted(value.items()):
                values += list(item)
        elif isinstance(value, list):
            layout.append((key, len(value)))
            values += list(value)
        else:
            layout.append((key, None))
            values.append(float(value))
    return layout, values


def _unflatten(layout, values: List[float]) -> Dict[str, object]:
    result, offset = {}, 0
    for key, shape in layout:
        if shape is None:
            result[key], offset = values[offset], offset + 1
        elif isinstance(shape, int):
            result[key], offset = values[offset:offset + shape], offset + shape
        else:
            result[key] = {}
            for name, length in shape:
                result[key][name], offset = values[offset:offset + length], offset + length
    return result


def launched_by_torchrun(environ: Mapping[str, str] = os.environ) -> bool:
    return "RANK" in environ and "WORLD_SIZE" in environ and "LOCAL_RANK" in environ


def start(device_name: str, *, meta_batch: Optional[int] = None,
          timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS, environ: Mapping[str, str] = os.environ) -> ProcessGroup:
    """Join torchrun's process group to compute on ``device_name`` (``auto``, ``cpu``, ``cuda``:
    a config's ``device``) and, when training, ``meta_batch`` tasks per meta-step (nothing to join
    without torchrun's variables, or for a world of one: :data:`SINGLE_PROCESS`).

    Checks first, on every rank before any rendezvous, what would fail later or silently: a world
    larger than the meta-batch (a rank without tasks), ``cuda`` (or ``auto`` on a machine with
    GPUs) on a node with fewer GPUs than processes. A meta-batch that the world size does not divide is split unevenly (the first
    ranks get one task more; the reduction weights each share by its size).
    """
    if not launched_by_torchrun(environ) or int(environ["WORLD_SIZE"]) == 1:
        return SINGLE_PROCESS
    rank, world_size, local_rank = int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ["LOCAL_RANK"])
    local_world_size = int(environ.get("LOCAL_WORLD_SIZE", world_size))
    if meta_batch is not None and world_size > meta_batch:
        raise DistributedSetupError(
            f"torchrun started {world_size} processes, but a meta-batch has only {meta_batch} tasks "
            f"(meta_batch {meta_batch}): every process needs at least one task of each meta-batch; "
            f"use at most {meta_batch} processes or a larger --meta-batch")
    if not timeout_seconds > 0:
        raise DistributedSetupError(f"the process-group timeout must be > 0 seconds, got {timeout_seconds}")
    if device_name == "cpu" or (device_name == "auto" and not torch.cuda.is_available()):
        backend, device = "gloo", torch.device("cpu")
    else:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus < local_world_size:
            raise DistributedSetupError(
                f"device {device_name}: torchrun started {local_world_size} processes on this node, but torch sees "
                f"{gpus} GPU(s); one GPU per process is needed (--nproc_per_node {max(gpus, 1)}), or use --device cpu")
        backend, device = "nccl", torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    options = {"device_id": device} if backend == "nccl" else {}
    torch.distributed.init_process_group(backend, rank=rank, world_size=world_size,
                                         timeout=datetime.timedelta(seconds=timeout_seconds), **options)
    return ProcessGroup(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend, device=device)


def stop(group: ProcessGroup) -> None:
    """Leave the process group (a no-op for a single process)."""
    if group.is_distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
