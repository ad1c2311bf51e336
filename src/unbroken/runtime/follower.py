"""What a rank other than 0 has instead of the index: nothing is written (rank 0 writes for the group).

Only rank 0 writes the tracking index (attempt rows, checkpoint rows, metrics) and runs retention;
the other ranks of a torch.distributed run get these stand-ins with the same methods.
"""

from __future__ import annotations

from typing import Any, Mapping


class NoIndex:
    """:class:`~.index.RunIndex` of a non-chief rank: every write is dropped."""

    supervised = True

    def reconcile(self, committed: list) -> None:
        pass

    def record_checkpoint(self, manifest: Any, *, by_this_attempt: bool = True) -> None:
        pass

    def mark_checkpoint(self, uuid: str, state: str, message: str | None = None, manifest: Any = None) -> None:
        pass

    def record_restore(self, uuid: str, steps_completed: int) -> bool:
        return False

    def end(self, end_reason: str, message: str | None) -> None:
        pass

    def close(self) -> None:
        pass


class NoMetrics:
    """:class:`~.metrics.MetricsWriter` of a non-chief rank: metrics come from rank 0."""

    def put(self, group: str, steps_completed: int, metrics: Mapping[str, Any]) -> None:
        pass

    def progress(self, fraction: float) -> None:
        pass

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self) -> None:
        pass

    @property
    def pending(self) -> int:
        return 0
