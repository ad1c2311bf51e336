"""Validated rows and shared statements of the index, run inside the caller's transaction.

Used by :mod:`.index`, :mod:`.attempts`, :mod:`.trials` and :mod:`.reconcile`; pure except for
the functions taking a connection, which execute on it (the caller holds the transaction).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .._proc import ProcessIdentity, process_start_time
from ..errors import ConfigError
from ._lazy import lazy_module
from .records import to_json
from .values import check_steps, metric_value

if TYPE_CHECKING:
    import sqlalchemy

sa = lazy_module("sqlalchemy")
tables = lazy_module("unbroken.tracking.tables")

CHECKPOINT_STATES = ("committed", "corrupt", "deleted")


def next_trial_number(conn: "sqlalchemy.Connection", experiment_id: int) -> int:
    """One past the experiment's last trial number. Locks the experiment's row until the
    transaction ends, so that transactions numbering its trials take turns (on PostgreSQL; on
    SQLite the write transaction does it)."""
    tables.locked(conn, tables.experiments, experiment_id)
    return tables.next_number(conn, tables.trials.c.number, tables.trials.c.experiment_id, experiment_id)


def insert_trial(conn: "sqlalchemy.Connection", experiment_id: int, number: int, hparams_json: str, storage_of,
                 command: str | None) -> int:
    """Insert trial ``number`` (inside the caller's transaction); return its id."""
    now = time.time()
    storage = str(storage_of(number)) if storage_of else ""
    result = conn.execute(tables.trials.insert().values(
        experiment_id=experiment_id, number=number, hparams=hparams_json, storage=storage, command=command,
        created_at=now, updated_at=now))
    return result.inserted_primary_key[0]


def checkpoint_row(trial_id: int, uuid: str, steps_completed: Any, created_at: Any, size_bytes: Any,
                   metadata: Any, attempt_id: int | None, state: str, message: str | None) -> dict[str, Any]:
    """A validated row of the checkpoints table (ConfigError naming the bad value)."""
    if state not in CHECKPOINT_STATES:
        raise ConfigError(f"unknown checkpoint state {state!r}")
    return {"uuid": str(uuid), "trial_id": trial_id, "attempt_id": attempt_id,
            "steps_completed": check_steps(steps_completed, f"steps_completed of checkpoint {uuid}"),
            "created_at": _seconds(created_at, f"created_at of checkpoint {uuid}"),
            "size_bytes": check_steps(size_bytes, f"size_bytes of checkpoint {uuid}"), "state": state,
            "message": message, "metadata": to_json(metadata, "metadata")}


def upsert_checkpoints(conn: "sqlalchemy.Connection", rows: list[dict[str, Any]]) -> None:
    """Insert checkpoint rows, replacing those with the same uuid (a re-index)."""
    tables.upsert(conn, tables.checkpoints, "uuid", rows)


def metric_row(trial_id: int, attempt_id: int | None, group: str, steps: Any, name: str, value: Any,
               at: Any) -> dict[str, Any]:
    return {"trial_id": trial_id, "attempt_id": attempt_id, "grp": str(group),
            "steps_completed": check_steps(steps, f"steps_completed of metric {name!r}"), "name": str(name),
            "value": metric_value(name, value), "time": _seconds(at, f"time of metric {name!r}")}


def end_statement(attempt_id: int, end_reason: str, exit_code: int | None, signal: int | None,
                  message: str | None, overwrite: bool) -> Any:
    """The UPDATE that records how an attempt ended; with ``overwrite=False`` it keeps an earlier end."""
    a = tables.attempts
    statement = a.update().where(a.c.id == attempt_id).values(
        ended_at=time.time(), end_reason=end_reason,
        exit_code=sa.func.coalesce(sa.literal(exit_code, a.c.exit_code.type), a.c.exit_code),
        signal=sa.func.coalesce(sa.literal(signal, a.c.signal.type), a.c.signal),
        message=sa.func.coalesce(sa.literal(message, a.c.message.type), a.c.message))
    return statement if overwrite else statement.where(a.c.end_reason.is_(None))


def identity(pid: int | None, pid_start: float | None) -> tuple[int, float | None]:
    """The (pid, start time) to record: this process when ``pid`` is None; the start time read
    from the system when not given."""
    if pid is None:
        me = ProcessIdentity.current()
        return me.pid, me.start_time if pid_start is None else float(pid_start)
    pid = check_steps(pid, "pid")
    if pid_start is None:
        return pid, process_start_time(pid)
    return pid, _seconds(pid_start, "pid_start")


def _seconds(value: Any, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{what} must be a time in seconds, not {value!r}") from None
