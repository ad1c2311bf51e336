"""Validated rows and shared statements of the index, run inside the caller's transaction.

Used by :mod:`.index`, :mod:`.trials` and :mod:`.reconcile`; pure except for the functions
taking a connection, which execute on it (the caller holds the transaction).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from .._proc import ProcessIdentity, process_start_time
from ..errors import ConfigError
from .records import to_json
from .values import check_steps, metric_value

CHECKPOINT_STATES = ("committed", "corrupt", "deleted")
CHECKPOINT_INSERT = ("INSERT OR REPLACE INTO checkpoints (uuid, trial_id, attempt_id, steps_completed, created_at, "
                     "size_bytes, state, message, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")


def next_trial_number(conn: sqlite3.Connection, experiment_id: int) -> int:
    (last,) = conn.execute("SELECT COALESCE(MAX(number), 0) FROM trials WHERE experiment_id = ?",
                           (experiment_id,)).fetchone()
    return last + 1


def insert_trial(conn: sqlite3.Connection, experiment_id: int, number: int, hparams_json: str, storage_of,
                 command: str | None) -> int:
    """Insert trial ``number`` (inside the caller's transaction); return its id."""
    now = time.time()
    storage = str(storage_of(number)) if storage_of else ""
    cur = conn.execute(
        "INSERT INTO trials (experiment_id, number, hparams, storage, command, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)", (experiment_id, number, hparams_json, storage, command, now, now))
    return cur.lastrowid


def checkpoint_row(trial_id: int, uuid: str, steps_completed: Any, created_at: Any, size_bytes: Any,
                   metadata: Any, attempt_id: int | None, state: str, message: str | None) -> tuple:
    """A validated row of the checkpoints table (column order of CHECKPOINT_SELECT)."""
    if state not in CHECKPOINT_STATES:
        raise ConfigError(f"unknown checkpoint state {state!r}")
    return (str(uuid), trial_id, attempt_id, check_steps(steps_completed, f"steps_completed of checkpoint {uuid}"),
            _seconds(created_at, f"created_at of checkpoint {uuid}"),
            check_steps(size_bytes, f"size_bytes of checkpoint {uuid}"), state, message,
            to_json(metadata, "metadata"))


def metric_row(trial_id: int, attempt_id: int | None, group: str, steps: Any, name: str, value: Any,
                at: Any) -> tuple:
    return (trial_id, attempt_id, str(group), check_steps(steps, f"steps_completed of metric {name!r}"), str(name),
            metric_value(name, value), _seconds(at, f"time of metric {name!r}"))


def end_statement(attempt_id: int, end_reason: str, exit_code: int | None, signal: int | None,
                   message: str | None, overwrite: bool) -> tuple[str, tuple]:
    guard = "" if overwrite else " AND end_reason IS NULL"
    return ("UPDATE attempts SET ended_at = ?, end_reason = ?, exit_code = COALESCE(?, exit_code), "
            "signal = COALESCE(?, signal), message = COALESCE(?, message) WHERE id = ?" + guard,
            (time.time(), end_reason, exit_code, signal, message, attempt_id))


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
