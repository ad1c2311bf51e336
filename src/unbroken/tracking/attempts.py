"""The attempts of a trial: starting, updating and ending them, and closing those whose process is
provably gone. Part of :class:`~unbroken.tracking.index.Tracker` (same threads, same blocking:
one short transaction per call, through the tracker's ``_write`` / ``_query``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .._proc import ProcessIdentity, identity_alive
from ..errors import ConfigError, NotFound
from ._lazy import lazy_module
from .records import ATTEMPT_COLUMNS, Attempt
from .rows import end_statement, identity
from .status import Alive, attempt_state, check_end_reason

if TYPE_CHECKING:
    import sqlalchemy

tables = lazy_module("unbroken.tracking.tables")

_SLURM_FIELDS = ("slurm_job_id", "slurm_array_task", "slurm_nodes", "slurm_restarts")


class AttemptsMixin:
    """Attempt methods of the Tracker (it provides ``_write``, ``_tx``, ``_query``, ``_attempt_select``)."""

    def start_attempt(self, trial_id: int, *, pid: int | None = None, pid_start: float | None = None,
                      launcher: str = "process", log_path: str | None = None, **slurm: Any) -> Attempt:
        """Record a new attempt of a trial, numbered one past the last; the trial becomes running.

        The attempt's process is ``pid`` of this host (this process when None); ``pid_start``
        is its start time, read from the system when not given (None if that process is gone).
        Processes starting attempts of one trial at once take turns on the trial's row.
        """
        now = time.time()
        pid, pid_start = identity(pid, pid_start)
        values = {"trial_id": trial_id, "started_at": now, "host": ProcessIdentity.current().host, "pid": pid,
                  "pid_start": pid_start, "launcher": launcher, "log_path": log_path,
                  **{k: v for k, v in slurm.items() if k in _SLURM_FIELDS}}

        def insert(conn: "sqlalchemy.Connection") -> int:  # one transaction: see Tracker.create_trial
            a, t = tables.attempts, tables.trials
            tables.locked(conn, t, trial_id)
            number = tables.next_number(conn, a.c.number, a.c.trial_id, trial_id)
            result = conn.execute(a.insert().values(number=number, **values))
            conn.execute(t.update().where(t.c.id == trial_id).values(status="running", message=None, updated_at=now))
            return result.inserted_primary_key[0]

        return self.attempt(self._write(insert))

    def attempt(self, attempt_id: int) -> Attempt:
        rows = self._query(self._attempt_select.where(tables.attempts.c.id == attempt_id))
        if not rows:
            raise NotFound(f"no attempt with id {attempt_id}")
        return Attempt(*rows[0])

    def attempts(self, trial_id: int) -> list[Attempt]:
        a = tables.attempts
        rows = self._query(self._attempt_select.where(a.c.trial_id == trial_id).order_by(a.c.number))
        return [Attempt(*r) for r in rows]

    def update_attempt(self, attempt_id: int, **fields: Any) -> None:
        """Set attempt columns (pid, pid_start, host, log_path, restored_uuid, restored_steps, message, slurm_*).

        Setting ``pid`` without ``pid_start`` also records that process's start time.
        """
        allowed = set(ATTEMPT_COLUMNS) - {"id", "trial_id", "number", "started_at"}
        if not fields or set(fields) - allowed:
            raise ConfigError(f"update_attempt takes {sorted(allowed)}")
        if "pid" in fields and fields["pid"] is not None:
            fields["pid"], fields["pid_start"] = identity(fields["pid"], fields.get("pid_start"))
        a = tables.attempts
        self._tx([a.update().where(a.c.id == attempt_id).values(**fields)])

    def end_attempt(self, attempt_id: int, end_reason: str, *, exit_code: int | None = None,
                    signal: int | None = None, message: str | None = None, overwrite: bool = True) -> None:
        """Record how an attempt ended. With ``overwrite=False`` an existing end is kept."""
        self._tx([end_statement(attempt_id, check_end_reason(end_reason), exit_code, signal, message, overwrite)])

    def close_lost_attempts(self, trial_id: int, alive: Alive | None = None) -> list[int]:
        """End as ``lost`` the unended attempts of this host whose process is provably gone.

        Liveness is ``alive(pid, pid_start)`` (default :func:`unbroken._proc.identity_alive`):
        a zombie or a reused pid with another start time is gone. Returns the ids ended.
        """
        lost = [a.id for a in self.attempts(trial_id)
                if a.end_reason is None and attempt_state(a, alive or identity_alive) == "lost"]
        if lost:
            self._tx([end_statement(i, "lost", None, None, "the process ended without recording how", False)
                      for i in lost])
        return lost
