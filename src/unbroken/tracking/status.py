"""Outcomes and statuses: the end reasons of attempts, the statuses of trials, and how readers
see an attempt or trial whose process is gone.

The read-side helpers never write: a reader (CLI, dashboard) shows a dead "running" attempt as
"lost" without changing the index. They run in the caller's thread; they read /proc (psutil)
and, for :func:`effective_status`, query the index.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Callable, Iterable

from .._proc import identity_alive
from ..errors import ConfigError
from .records import Attempt, Trial

if TYPE_CHECKING:
    from .index import Tracker

#: Attempt end reasons.
END_REASONS = ("completed", "crashed", "preempted", "timed_out", "cancelled", "lost")
#: Trial statuses (stored).
TRIAL_STATUSES = ("created", "running", "completed", "preempted", "crashed", "failed", "cancelled")
#: What readers may show besides the stored statuses: a "running" trial whose process is gone.
LOST = "lost"
RUNNING = "running"

#: The status a trial takes when an attempt ends this way (one table for every writer).
#: A timed-out attempt saved and stopped like a preempted one; a lost one ended without saying
#: how, which counts as a crash.
TRIAL_STATUS_OF_END_REASON: dict[str, str] = {
    "completed": "completed",
    "crashed": "crashed",
    "preempted": "preempted",
    "timed_out": "preempted",
    "cancelled": "cancelled",
    "lost": "crashed",
}

#: ``alive(pid, start_time) -> bool`` decides whether a process of this host runs.
Alive = Callable[[int, "float | None"], bool]


def trial_status_for(end_reason: str) -> str:
    """The trial status for an attempt's ``end_reason``; ConfigError for an unknown reason."""
    try:
        return TRIAL_STATUS_OF_END_REASON[end_reason]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown end reason {end_reason!r}; use one of {END_REASONS}") from None


def check_end_reason(end_reason: str) -> str:
    trial_status_for(end_reason)
    return end_reason


def attempt_state(attempt: Attempt, alive: Alive = identity_alive) -> str:
    """How an attempt stands: its end reason; else "lost" if its process is provably gone; else "running".

    Provably gone means: the attempt ran on this host, and no live non-zombie process has its
    pid with its start time (a reused pid, or a killed child not yet reaped, is gone). Attempts
    of other hosts, or without a pid, are "running": their processes cannot be checked here.
    """
    if attempt.end_reason:
        return attempt.end_reason
    if attempt.pid is None or attempt.host != socket.gethostname():
        return RUNNING
    return RUNNING if alive(attempt.pid, attempt.pid_start) else LOST


def effective_status(tracker: "Tracker", trial: Trial, attempts: Iterable[Attempt] | None = None,
                     alive: Alive = identity_alive) -> str:
    """The trial's status as readers should show it: "lost" for a "running" trial whose unended
    attempts are all provably gone (see :func:`attempt_state`), else the stored status.

    ``attempts`` (the trial's attempts) saves a query when the caller has them already.
    """
    if trial.status != RUNNING:
        return trial.status
    unended = [a for a in (tracker.attempts(trial.id) if attempts is None else attempts) if not a.end_reason]
    if unended and all(attempt_state(a, alive) == LOST for a in unended):
        return LOST
    return trial.status
