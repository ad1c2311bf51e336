"""A fake torch.distributed group whose ranks are threads of one process (for collective logic in unit tests)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor


class ThreadGroup:
    """``size`` ranks that are threads; collectives meet at a barrier (as torch.distributed's do)."""

    def __init__(self, size: int):
        self.size = size
        self._barrier = threading.Barrier(size, timeout=30)
        self._slots: list = [None] * size

    def rank(self, rank: int) -> "Member":
        return Member(self, rank)

    def exchange(self, rank: int, value):
        self._slots[rank] = value
        self._barrier.wait()
        values = list(self._slots)
        self._barrier.wait()
        return values


class Member:
    def __init__(self, group: ThreadGroup, rank: int):
        self._group, self.rank, self.size, self.local_rank = group, rank, group.size, rank

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    def allgather(self, value):
        return self._group.exchange(self.rank, value)

    def broadcast(self, value):
        return self.allgather(value)[0]

    def barrier(self) -> None:
        self.allgather(None)


def on_every_rank(ranks, body):
    """Run ``body(rank, item)`` for every item of ``ranks`` at once, one thread each; each result or exception."""
    with ThreadPoolExecutor(len(ranks)) as pool:
        futures = [pool.submit(body, r, item) for r, item in enumerate(ranks)]
        return [f.exception(timeout=60) or f.result() for f in futures]
