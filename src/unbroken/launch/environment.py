"""Where the supervisor runs: a plain machine, or a scheduler's allocation that adds facts and actions.

The base :class:`Environment` is a plain machine. The Slurm one (:mod:`unbroken.launch.slurm`)
reads the job's end time, records job ids on each attempt, and requeues the job after a
preemption. All methods are called from the supervisor's main thread.
"""

from __future__ import annotations

from typing import Callable

#: ``wait_for_kill(timeout) -> bool``: block until the supervisor receives a stop signal or
#: ``timeout`` seconds pass; True if a signal came.
WaitForKill = Callable[[float], bool]


class Environment:
    """A plain machine: no deadline of its own, no requeueing."""

    #: The most requeues allowed (None: no limit); only used where :meth:`requeues` is not None.
    max_requeues: int | None = None

    def deadline(self) -> float | None:
        """Unix time at which the allocation ends (None: no end)."""
        return None

    def attempt_fields(self) -> dict:
        """Extra columns of each attempt row (launcher, scheduler ids)."""
        return {"launcher": "unbroken-run"}

    def requeues(self) -> int | None:
        """How often this job was requeued so far, or None where the job cannot be requeued."""
        return None

    def requeue(self, reason: str, log: Callable[[str], None], wait_for_kill: WaitForKill) -> None:
        """Requeue the job after the child saved and stopped. Errors are logged, not raised."""
        raise NotImplementedError("this environment cannot requeue")
