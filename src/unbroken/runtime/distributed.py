"""``run.distributed``: who this process is among the processes of one training.

Two implementations with one surface (Determined's ``core.distributed``): :class:`SingleProcess`
(rank 0 of 1, the chief) and :class:`~.torchdist.TorchDistributed` (a torch.distributed process
group). :func:`detect` picks one from the environment; the contexts ask it whether they are the
chief and to agree on values, never detect a process group themselves.

Collectives (``broadcast``, ``allgather``, ``barrier``): every rank must call them, in the same
order, from its training thread (unbroken never calls one from another thread).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping, Protocol, TypeVar

T = TypeVar("T")


class Distributed(Protocol):
    """What the runtime needs to know about the other processes of a training."""

    rank: int
    size: int
    local_rank: int

    @property
    def is_chief(self) -> bool: ...

    def broadcast(self, value: T) -> T: ...

    def allgather(self, value: Any) -> list[Any]: ...

    def barrier(self) -> None: ...


class SingleProcess:
    """The distributed context of a run with one process."""

    rank = 0
    size = 1
    local_rank = 0

    @property
    def is_chief(self) -> bool:
        """True on the process that commits checkpoints and writes the index."""
        return True

    def broadcast(self, value: T) -> T:
        """The chief's ``value``, on every rank."""
        return value

    def allgather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order."""
        return [value]

    def barrier(self) -> None:
        """Wait for every rank."""


def detect(environ: Mapping[str, str] = os.environ) -> "Distributed":
    """The distributed context of this process: all ranks must call it (it may create a group).

    A torch.distributed run is recognised by an initialised process group, or by ``WORLD_SIZE``
    above 1 (torchrun, Slurm with ``srun``); then the group is initialised here from the
    environment (``env://``) if the script did not do it yet. Anything else is one process.
    torch is imported only in those cases (``import unbroken`` never imports it).
    """
    world = _int(environ.get("WORLD_SIZE"), 1)
    initialised = "torch" in sys.modules and _torch_group_initialised()
    if world <= 1 and not initialised:
        return SingleProcess()
    from .torchdist import TorchDistributed  # noqa: PLC0415 - imports torch

    group = TorchDistributed.from_environment()
    return group if group.size > 1 else SingleProcess()


def _torch_group_initialised() -> bool:
    dist = getattr(sys.modules.get("torch"), "distributed", None)
    return bool(dist is not None and dist.is_available() and dist.is_initialized())


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default
