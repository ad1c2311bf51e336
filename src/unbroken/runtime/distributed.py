"""``run.distributed``: who this process is among the processes of one training.

One process for now (rank 0 of 1, the chief). The torch.distributed implementation plugs in
here with the same surface (Determined's ``core.distributed``): the contexts ask it whether they
are the chief and to agree on values, never detect a process group themselves.
"""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


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
