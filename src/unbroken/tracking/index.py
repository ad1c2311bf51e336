"""The tracking index: experiments, trials, attempts, checkpoints and metrics in SQLite.

The index is for people and dashboards, never the truth: restoring never needs it, and its
checkpoint table can be rebuilt from storage (:mod:`unbroken.tracking.reconcile`). One
``Tracker`` may be shared by threads (a lock serialises them); each call is one short
transaction and blocks only on SQLite's locks (busy timeout 30 s). Several processes (a
supervisor and its child) may write at once: the database is in WAL mode.

Every write goes through :meth:`Tracker._write`, which rolls back on any exception, so one
failed write never breaks the next. Values are validated before anything is written.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .._proc import ProcessIdentity, identity_alive
from ..config import DB_FILENAME, check_name
from ..errors import ConfigError, NotFound, TrackingError, TrialNotFound, UnbrokenWarning
from . import _db
from .records import (ATTEMPT_COLUMNS, CHECKPOINT_SELECT, TRIAL_SELECT, Attempt, CheckpointRecord, Experiment,
                      MetricPoint, Trial, checkpoint_of, to_json, trial_of)
from .rows import (CHECKPOINT_INSERT, CHECKPOINT_STATES, checkpoint_row, end_statement, identity, insert_trial,
                   metric_row, next_trial_number)
from .schema import MIGRATIONS, SCHEMA_VERSION
from .status import END_REASONS, TRIAL_STATUSES, Alive, attempt_state, check_end_reason
from .values import check_fraction, check_steps

__all__ = ["Attempt", "CheckpointRecord", "END_REASONS", "Experiment", "MetricPoint", "TRIAL_STATUSES",
           "Tracker", "Trial"]

_SLURM_FIELDS = ("slurm_job_id", "slurm_array_task", "slurm_nodes", "slurm_restarts")


class Tracker:
    """A connection to one tracking database (``<home>/unbroken.db`` by default).

    ``Tracker(path)`` opens read-write, creating and migrating the database;
    :meth:`open_readonly` and :meth:`open_or_rebuild` are the other ways in.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self._setup(Path(path), _db.connect_writable(Path(path)), readonly=False)

    def _setup(self, path: Path, conn: sqlite3.Connection, *, readonly: bool) -> None:
        self.path, self._conn, self._readonly = path, conn, readonly
        self._lock = threading.RLock()
        try:
            self._check_version() if readonly else self._migrate()
            present = {row[1] for row in self._query("PRAGMA table_info(attempts)")}
        except BaseException:
            _db.close_quietly(conn)
            raise
        self._attempt_select = "SELECT " + ", ".join(
            c if c in present else f"NULL AS {c}" for c in ATTEMPT_COLUMNS) + " FROM attempts"

    @classmethod
    def in_home(cls, home: Path) -> "Tracker":
        return cls(Path(home) / DB_FILENAME)

    @classmethod
    def open_readonly(cls, path: str | os.PathLike[str]) -> "Tracker":
        """Open an existing index for reading (CLI, dashboard); writes raise TrackingError.

        Never creates a file: NotFound ("no tracking index at PATH") if there is none. Works on
        a read-only folder or file system (see :func:`unbroken.tracking._db.connect_readonly`).
        An index of an older schema is read as it is (columns it lacks read as None).
        """
        tracker = cls.__new__(cls)
        tracker._setup(Path(path), _db.connect_readonly(Path(path)), readonly=True)
        return tracker

    @classmethod
    def open_or_rebuild(cls, path: str | os.PathLike[str]) -> "Tracker":
        """Open ``path`` read-write; if the file is corrupt (not a database, malformed), move it
        and its -wal/-shm aside to ``<path>.corrupt-<timestamp>``, warn (UnbrokenWarning naming
        both paths) and start a fresh index. The caller re-indexes checkpoints from storage.

        Other errors (permissions, a newer schema) are raised. Processes rebuilding at once take
        turns under a lock file beside the index, so a fresh index is never moved aside.
        """
        path = Path(path)
        try:
            return cls(path)
        except TrackingError as exc:
            if not _db.is_corruption(exc):
                raise
        with _db.rebuild_lock(path):
            try:
                return cls(path)  # another process may have rebuilt it meanwhile
            except TrackingError as exc:
                if not _db.is_corruption(exc):
                    raise
                reason = str(exc)
            moved = _db.move_aside(path)
            warnings.warn(f"the tracking index {path} is corrupt ({reason}); moved it to {moved} and started a "
                          "new one (checkpoints are re-indexed from storage)", UnbrokenWarning, stacklevel=2)
            return cls(path)

    def close(self) -> None:
        """Roll back anything pending and close. Never raises; closing twice is harmless."""
        with self._lock:
            _db.close_quietly(self._conn)

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @property
    def readonly(self) -> bool:
        return self._readonly

    # -- plumbing ----------------------------------------------------------------------------
    def _write(self, body: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``body(connection)`` in one write transaction (see :func:`_db.write`): committed
        if it returns, rolled back on any exception, raised as TrackingError/ConfigError.

        Package-private: :mod:`.trials` and :mod:`.reconcile` write through it too.
        """
        with self._lock:
            if self._readonly:
                raise TrackingError(f"tracking database {self.path} is open read-only")
            return _db.write(self._conn, self.path, body)

    def _tx(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> list[sqlite3.Cursor]:
        """Run SQL statements in one write transaction; return their cursors."""
        return self._write(lambda conn: [conn.execute(sql, args) for sql, args in statements])

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return _db.read(self._conn, self.path, sql, args)

    def _check_version(self) -> int:
        version = self._query("PRAGMA user_version")[0][0]
        if version > SCHEMA_VERSION:
            raise TrackingError(f"tracking database {self.path} has schema version {version}, newer than this "
                                f"unbroken knows ({SCHEMA_VERSION}): upgrade unbroken")
        if self._readonly and version == 0:
            raise TrackingError(f"tracking database {self.path} is empty (no schema yet)")
        return version

    def _migrate(self) -> None:
        def migrate(conn: sqlite3.Connection) -> None:
            version = self._check_version()
            for target in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[target].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target + 1}")

        try:
            self._write(migrate)
        except TrackingError as exc:
            if not isinstance(exc.__cause__, sqlite3.Error):
                raise
            raise TrackingError(f"cannot migrate tracking database {self.path}: {exc.__cause__}") from exc.__cause__

    def schema_version(self) -> int:
        return self._query("PRAGMA user_version")[0][0]

    # -- experiments and trials --------------------------------------------------------------
    def experiment(self, name: str, *, create: bool = False) -> Experiment:
        """The experiment called ``name``; created if ``create``, else NotFound."""
        check_name(name)
        if create:
            self._tx([("INSERT OR IGNORE INTO experiments (name, created_at) VALUES (?, ?)", (name, time.time()))])
        rows = self._query("SELECT id, name, created_at FROM experiments WHERE name = ?", (name,))
        if not rows:
            raise NotFound(f"no experiment named {name!r} (list them with `unbroken ls`)")
        return Experiment(*rows[0])

    def experiments(self) -> list[Experiment]:
        return [Experiment(*r) for r in self._query("SELECT id, name, created_at FROM experiments ORDER BY id")]

    def create_trial(self, experiment: str, *, hparams: dict[str, Any] | None = None,
                     storage_of=None, command: str | None = None) -> Trial:
        """Add a trial numbered one past the last of ``experiment``; ``storage_of(number)`` names its storage.

        To find or create a trial (resume the newest, a numbered one, or a fresh one) use
        :func:`unbroken.tracking.join_trial`.
        """
        exp = self.experiment(experiment, create=True)
        hparams_json = to_json(hparams or {}, "hparams")

        # Read the last number and insert in one write transaction, so that processes creating
        # trials of the same experiment at once never pick the same number.
        def insert(conn: sqlite3.Connection) -> int:
            return insert_trial(conn, exp.id, next_trial_number(conn, exp.id), hparams_json, storage_of, command)

        return self.trial_by_id(self._write(insert))

    def trial(self, experiment: str, number: int | None = None) -> Trial:
        """One trial by experiment name and number (the newest when ``number`` is None); TrialNotFound."""
        if number is None:
            rows = self._query(TRIAL_SELECT + " WHERE e.name = ? ORDER BY t.number DESC LIMIT 1", (experiment,))
        else:
            rows = self._query(TRIAL_SELECT + " WHERE e.name = ? AND t.number = ?",
                               (experiment, check_steps(number, "trial number")))
        if not rows:
            which = f"{experiment}/{number}" if number is not None else experiment
            raise TrialNotFound(f"no trial {which!r} (list them with `unbroken ls`)")
        return trial_of(rows[0])

    def trial_by_id(self, trial_id: int) -> Trial:
        rows = self._query(TRIAL_SELECT + " WHERE t.id = ?", (trial_id,))
        if not rows:
            raise TrialNotFound(f"no trial with id {trial_id}")
        return trial_of(rows[0])

    def trials(self, experiment: str | None = None) -> list[Trial]:
        if experiment is None:
            rows = self._query(TRIAL_SELECT + " ORDER BY e.name, t.number")
        else:
            rows = self._query(TRIAL_SELECT + " WHERE e.name = ? ORDER BY t.number", (experiment,))
        return [trial_of(r) for r in rows]

    def update_trial(self, trial_id: int, **fields: Any) -> None:
        """Set trial columns: status, message, steps_completed, progress, command, hparams."""
        allowed = {"status", "message", "steps_completed", "progress", "command", "hparams"}
        if not fields or set(fields) - allowed:
            raise ConfigError(f"update_trial takes {sorted(allowed)}, not {sorted(set(fields) - allowed)}")
        if "status" in fields and fields["status"] not in TRIAL_STATUSES:
            raise ConfigError(f"unknown trial status {fields['status']!r}")
        if "hparams" in fields:
            fields["hparams"] = to_json(fields["hparams"], "hparams")
        if "steps_completed" in fields:
            fields["steps_completed"] = check_steps(fields["steps_completed"], "steps_completed of a trial")
        if fields.get("progress") is not None:
            fields["progress"] = check_fraction(fields["progress"])
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._tx([(f"UPDATE trials SET {sets}, updated_at = ? WHERE id = ?", (*fields.values(), time.time(), trial_id))])

    def delete_experiment(self, name: str) -> None:
        exp = self.experiment(name)
        self._tx([("DELETE FROM experiments WHERE id = ?", (exp.id,))])

    # -- attempts ----------------------------------------------------------------------------
    def start_attempt(self, trial_id: int, *, pid: int | None = None, pid_start: float | None = None,
                      launcher: str = "process", log_path: str | None = None, **slurm: Any) -> Attempt:
        """Record a new attempt of a trial, numbered one past the last; the trial becomes running.

        The attempt's process is ``pid`` of this host (this process when None); ``pid_start``
        is its start time, read from the system when not given (None if that process is gone).
        """
        now = time.time()
        pid, pid_start = identity(pid, pid_start)
        extra = {k: v for k, v in slurm.items() if k in _SLURM_FIELDS}
        cols = ["trial_id", "number", "started_at", "host", "pid", "pid_start", "launcher", "log_path", *extra]

        def insert(conn: sqlite3.Connection) -> int:  # one transaction: see create_trial
            (last,) = conn.execute("SELECT COALESCE(MAX(number), 0) FROM attempts WHERE trial_id = ?",
                                   (trial_id,)).fetchone()
            vals = [trial_id, last + 1, now, ProcessIdentity.current().host, pid, pid_start, launcher, log_path,
                    *extra.values()]
            cur = conn.execute(f"INSERT INTO attempts ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", vals)
            conn.execute("UPDATE trials SET status = 'running', message = NULL, updated_at = ? WHERE id = ?",
                         (now, trial_id))
            return cur.lastrowid

        return self.attempt(self._write(insert))

    def attempt(self, attempt_id: int) -> Attempt:
        rows = self._query(self._attempt_select + " WHERE id = ?", (attempt_id,))
        if not rows:
            raise NotFound(f"no attempt with id {attempt_id}")
        return Attempt(*rows[0])

    def attempts(self, trial_id: int) -> list[Attempt]:
        rows = self._query(self._attempt_select + " WHERE trial_id = ? ORDER BY number", (trial_id,))
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
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._tx([(f"UPDATE attempts SET {sets} WHERE id = ?", (*fields.values(), attempt_id))])

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

    # -- checkpoints -------------------------------------------------------------------------
    def record_checkpoint(self, trial_id: int, uuid: str, steps_completed: int, *, created_at: float,
                          size_bytes: int, metadata: dict[str, Any], attempt_id: int | None = None,
                          state: str = "committed", message: str | None = None) -> None:
        """Index a checkpoint; a committed one also advances (never lowers) the trial's ``steps_completed``.

        ConfigError (before anything is written) for steps or a size outside ``[0, 2**63)``.
        """
        row = checkpoint_row(trial_id, uuid, steps_completed, created_at, size_bytes, metadata, attempt_id,
                             state, message)
        statements: list[tuple[str, Sequence[Any]]] = [(CHECKPOINT_INSERT, row)]
        if state == "committed":
            statements.append(("UPDATE trials SET steps_completed = MAX(steps_completed, ?), updated_at = ? "
                               "WHERE id = ?", (row[3], time.time(), trial_id)))
        self._tx(statements)

    def mark_checkpoint(self, uuid: str, state: str, message: str | None = None) -> None:
        """Set a checkpoint's state: 'committed', 'corrupt' or 'deleted'."""
        if state not in CHECKPOINT_STATES:
            raise ConfigError(f"unknown checkpoint state {state!r}")
        self._tx([("UPDATE checkpoints SET state = ?, message = ? WHERE uuid = ?", (state, message, uuid))])

    def checkpoints(self, trial_id: int) -> list[CheckpointRecord]:
        rows = self._query(CHECKPOINT_SELECT + " WHERE trial_id = ? ORDER BY steps_completed, created_at", (trial_id,))
        return [checkpoint_of(r) for r in rows]

    def checkpoint(self, uuid: str) -> CheckpointRecord:
        rows = self._query(CHECKPOINT_SELECT + " WHERE uuid = ?", (uuid,))
        if not rows:
            raise NotFound(f"no checkpoint {uuid} in the index")
        return checkpoint_of(rows[0])

    # -- metrics -----------------------------------------------------------------------------
    def add_metrics(self, trial_id: int, attempt_id: int | None,
                    points: Iterable[tuple[str, int, str, float | None, float]], *,
                    progress: float | None = None) -> None:
        """Insert metric points ``(group, steps_completed, name, value, time)`` in one transaction,
        and set the trial's ``progress`` in the same one when given.

        Values are stored as finite floats or NULL (None, NaN, inf); a bad step or value raises
        ConfigError naming the metric, before anything is written.
        """
        rows = [metric_row(trial_id, attempt_id, *point) for point in points]
        statements: list[tuple[str, Sequence[Any]]] = []
        if progress is not None:
            statements.append(("UPDATE trials SET progress = ?, updated_at = ? WHERE id = ?",
                               (check_fraction(progress), time.time(), trial_id)))
        if not rows and not statements:
            return

        def insert(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT INTO metrics (trial_id, attempt_id, grp, steps_completed, name, value, time) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            for sql, args in statements:
                conn.execute(sql, args)

        self._write(insert)

    def metrics(self, trial_id: int, group: str | None = None, name: str | None = None) -> list[MetricPoint]:
        sql = "SELECT grp, steps_completed, name, value, time, attempt_id FROM metrics WHERE trial_id = ?"
        args: list[Any] = [trial_id]
        if group is not None:
            sql += " AND grp = ?"
            args.append(group)
        if name is not None:
            sql += " AND name = ?"
            args.append(name)
        return [MetricPoint(*r) for r in self._query(sql + " ORDER BY steps_completed, id", args)]

    def latest_metrics(self, trial_id: int) -> dict[str, dict[str, tuple[int, float | None]]]:
        """For each group and name, the ``(steps_completed, value)`` reported last."""
        rows = self._query(
            "SELECT grp, name, steps_completed, value FROM metrics WHERE id IN "
            "(SELECT MAX(id) FROM metrics WHERE trial_id = ? GROUP BY grp, name) ORDER BY grp, name", (trial_id,))
        out: dict[str, dict[str, tuple[int, float | None]]] = {}
        for grp, name, steps, value in rows:
            out.setdefault(grp, {})[name] = (steps, value)
        return out
