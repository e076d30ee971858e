"""Running the training code on a device that is not the CPU, on a machine that has only a CPU.

torch's ``meta`` device holds shapes, dtypes and devices but no values: every op runs (its output
shape and device are computed) and nothing is stored. On it, the code paths of a GPU run show two
of their faults on a CPU-only machine:

* a tensor made without the right device (``torch.zeros(n)`` instead of ``x.new_zeros(n)``) meets
  the device's tensors in an op and raises, as it would against CUDA tensors;
* a value read on the host (``.item()``, ``float(t)``, ``bool(t)``, ``.cpu()``, ``.tolist()``), a
  device synchronisation on a GPU, has no value to read on ``meta``.

:class:`HostTraffic` records every copy between the host and the ``meta`` device with the line
of this package that asked for it, and answers reads with zeros, so that a run can go on past the
reads it is *meant* to make (the meta-step's one read of its statistics) and a test can compare the
reads it saw with those. A copy from the host to the device is recorded too (from pageable memory it
makes the host wait on a GPU).

Build models for it under ``with torch.device("meta"):``: ``module.to("meta")`` makes a new
Parameter per module and so unties shared tensors (an ACDC-net's coefficient bank), which
``.to("cuda")`` does not.
"""
from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fewshot_acdc

aten = torch.ops.aten
PACKAGE = os.path.dirname(os.path.abspath(fewshot_acdc.__file__))
TESTS = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class Transfer:
    """One copy between host and device: ``where`` is ``(path under fewshot_acdc/, function)`` of
    the innermost package frame that caused it (``("", "")`` when none did)."""
    kind: str  # "read" (device to host) or "write" (host to device)
    op: str
    where: Tuple[str, str]


def _caller() -> Tuple[str, str]:
    for frame in reversed(traceback.extract_stack()):
        path = os.path.abspath(frame.filename)
        if path.startswith(PACKAGE + os.sep):
            return os.path.relpath(path, os.path.dirname(PACKAGE)), frame.name
    return "", ""


def _is_device(tensor: object) -> bool:
    return isinstance(tensor, torch.Tensor) and tensor.device.type == "meta"


def _is_host(tensor: object) -> bool:
    return isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu"


def _zero_scalar(dtype: torch.dtype):
    if dtype == torch.bool:
        return False
    return 0.0 if dtype.is_floating_point or dtype.is_complex else 0


class HostTraffic(TorchDispatchMode):
    """Records the copies between the host and the ``meta`` device while it is active (module
    docstring); :attr:`reads` and :attr:`writes` list them, each with the package function that
    made it. A read returns zeros of the right shape and dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.transfers: List[Transfer] = []

    @property
    def reads(self) -> List[Tuple[str, str]]:
        return [transfer.where for transfer in self.transfers if transfer.kind == "read"]

    @property
    def writes(self) -> List[Tuple[str, str]]:
        return [transfer.where for transfer in self.transfers if transfer.kind == "write"]

    def _record(self, kind: str, func) -> None:
        self.transfers.append(Transfer(kind, str(func), _caller()))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._local_scalar_dense.default and _is_device(args[0]):  # item(), float(), bool()
            self._record("read", func)
            return _zero_scalar(args[0].dtype)
        if func is aten._to_copy.default:
            source, target = args[0], kwargs.get("device")
            target_type = torch.device(target).type if target is not None else None
            if _is_device(source) and target_type == "cpu":  # .cpu(), .to("cpu")
                self._record("read", func)
                return torch.zeros(source.shape, dtype=kwargs.get("dtype") or source.dtype)
            if _is_host(source) and target_type == "meta":
                self._record("write", func)
        if func is aten.copy_.default:
            target, source = args[0], args[1]
            if _is_host(target) and _is_device(source):
                self._record("read", func)
                return target.zero_()
            if _is_device(target) and _is_host(source) and source.dim() > 0:
                self._record("write", func)
        return func(*args, **kwargs)


def on_device(tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``tensor`` as a ``meta`` tensor of the same shape and dtype (``None`` stays ``None``)."""
    return None if tensor is None else torch.empty_like(tensor, device="meta")
