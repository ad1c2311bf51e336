"""``run.distributed`` for a torch.distributed process group (see :mod:`.distributed`).

unbroken's own collectives run on a gloo group of their own (created once, on every rank), so
they never enter the user's NCCL stream nor interleave with the user's collectives on the default
group. Object collectives pickle small Python values (ids, entries, flags): never tensors.
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
from typing import Any, TypeVar

from ..errors import ConfigError

T = TypeVar("T")

#: How long a collective of unbroken may wait for the other ranks (a dead rank is torchrun's to notice).
COLLECTIVE_TIMEOUT = dt.timedelta(minutes=30)


class TorchDistributed:
    """The distributed context of one rank of a torch.distributed group.

    Collectives: every rank must call them in the same order, from one thread at a time.
    """

    def __init__(self, rank: int, size: int, local_rank: int, group: Any = None):
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self._group = group

    @classmethod
    def from_environment(cls) -> "TorchDistributed":
        """Join the initialised default group (initialising it from ``env://`` when needed).

        All ranks must call this. Raises ConfigError when torch.distributed is unavailable.
        """
        import torch.distributed as dist  # noqa: PLC0415

        if not dist.is_available():
            raise ConfigError("WORLD_SIZE > 1, but this torch has no torch.distributed")
        if not dist.is_initialized():
            dist.init_process_group(backend=_default_backend(), timeout=COLLECTIVE_TIMEOUT)
            atexit.register(_destroy_at_exit)  # ours to end: a live gloo group at exit can abort the process
        rank, size = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK") or rank)
        group = None if str(dist.get_backend()) == "gloo" else dist.new_group(backend="gloo",
                                                                              timeout=COLLECTIVE_TIMEOUT)
        return cls(rank, size, local_rank, group)

    @property
    def is_chief(self) -> bool:
        """True on rank 0: it picks checkpoint ids, commits, writes the index and runs retention."""
        return self.rank == 0

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (others pass anything). All ranks must call this."""
        import torch.distributed as dist  # noqa: PLC0415

        box = [value if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0, group=self._group)
        return box[0]

    def allgather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order. All ranks must call this."""
        import torch.distributed as dist  # noqa: PLC0415

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value, group=self._group)
        return out

    def barrier(self) -> None:
        """Block until every rank called it. All ranks must call this."""
        import torch.distributed as dist  # noqa: PLC0415

        dist.barrier(group=self._group)


def _destroy_at_exit() -> None:
    """At interpreter exit: destroy the default group unbroken initialised (if the script did not).

    Left to the C++ destructors, a gloo group's threads can end the process with "terminate called
    without an active exception" (SIGABRT) after the training finished. Local, not a collective.
    """
    import torch.distributed as dist  # noqa: PLC0415

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _default_backend() -> str:
    import torch  # noqa: PLC0415

    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
