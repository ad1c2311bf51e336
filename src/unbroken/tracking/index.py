"""The tracking index: experiments, trials, attempts, checkpoints and metrics in SQLite.

The index is for people and dashboards. Restoring never needs it, and its checkpoint table
can be rebuilt from storage. One ``Tracker`` may be shared by threads; each call is one short
transaction. Several processes (a supervisor and its child) may write at once: the database is
in WAL mode with a busy timeout.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..config import DB_FILENAME, check_name
from .._proc import pid_alive as _pid_alive
from ..errors import ConfigError, NotFound, TrackingError
from .schema import MIGRATIONS, SCHEMA_VERSION

#: Attempt end reasons.
END_REASONS = ("completed", "crashed", "preempted", "timed_out", "cancelled", "lost")
#: Trial statuses.
TRIAL_STATUSES = ("created", "running", "completed", "preempted", "crashed", "failed", "cancelled")


@dataclasses.dataclass(frozen=True)
class Experiment:
    id: int
    name: str
    created_at: float


@dataclasses.dataclass(frozen=True)
class Trial:
    id: int
    experiment: str
    number: int
    hparams: dict[str, Any]
    status: str
    message: str | None
    storage: str
    command: str | None
    steps_completed: int
    progress: float | None
    created_at: float
    updated_at: float

    @property
    def ref(self) -> str:
        """``experiment/number``, the name people use for a trial."""
        return f"{self.experiment}/{self.number}"


@dataclasses.dataclass(frozen=True)
class Attempt:
    id: int
    trial_id: int
    number: int
    started_at: float
    ended_at: float | None
    host: str | None
    pid: int | None
    launcher: str
    exit_code: int | None
    signal: int | None
    end_reason: str | None
    message: str | None
    log_path: str | None
    restored_uuid: str | None
    restored_steps: int | None
    slurm_job_id: str | None
    slurm_array_task: str | None
    slurm_nodes: str | None
    slurm_restarts: int | None


@dataclasses.dataclass(frozen=True)
class CheckpointRecord:
    uuid: str
    trial_id: int
    attempt_id: int | None
    steps_completed: int
    created_at: float
    size_bytes: int
    state: str
    message: str | None
    metadata: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class MetricPoint:
    group: str
    steps_completed: int
    name: str
    value: float | None
    time: float
    attempt_id: int | None


_TRIAL_SELECT = (
    "SELECT t.id, e.name, t.number, t.hparams, t.status, t.message, t.storage, t.command, "
    "t.steps_completed, t.progress, t.created_at, t.updated_at FROM trials t "
    "JOIN experiments e ON e.id = t.experiment_id"
)
_ATTEMPT_COLUMNS = [f.name for f in dataclasses.fields(Attempt)]


class Tracker:
    """A connection to one tracking database (``<home>/unbroken.db`` by default)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False,
                                         isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA synchronous=NORMAL")
        except (sqlite3.Error, OSError) as exc:
            raise TrackingError(f"cannot open tracking database {self.path}: {exc}") from exc
        self._lock = threading.RLock()
        self._migrate()

    @classmethod
    def in_home(cls, home: Path) -> "Tracker":
        return cls(home / DB_FILENAME)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- plumbing ----------------------------------------------------------------------------
    def _tx(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> list[sqlite3.Cursor]:
        """Run SQL statements in one write transaction; return their cursors."""
        return self._write(lambda conn: [conn.execute(sql, args) for sql, args in statements])

    def _write(self, body: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``body(connection)`` in one write transaction (reads in it see a stable database)."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    out = body(self._conn)
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                return out
            except sqlite3.Error as exc:
                raise TrackingError(f"tracking database {self.path}: {exc}") from exc

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise TrackingError(f"tracking database {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    self._conn.execute("ROLLBACK")
                    raise TrackingError(
                        f"tracking database {self.path} has schema version {version}, newer than this "
                        f"unbroken knows ({SCHEMA_VERSION}): upgrade unbroken"
                    )
                for target in range(version, SCHEMA_VERSION):
                    for statement in MIGRATIONS[target].split(";"):
                        if statement.strip():
                            self._conn.execute(statement)
                    self._conn.execute(f"PRAGMA user_version = {target + 1}")
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK") if self._conn.in_transaction else None
                raise TrackingError(f"cannot migrate tracking database {self.path}: {exc}") from exc

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
        """Add a trial numbered one past the last of ``experiment``; ``storage_of(number)`` names its storage."""
        exp = self.experiment(experiment, create=True)
        hparams_json = _json(hparams or {}, "hparams")
        now = time.time()
        # Read the last number and insert in one write transaction, so that processes creating
        # trials of the same experiment at once never pick the same number.
        def insert(conn: sqlite3.Connection) -> int:
            (last,) = conn.execute("SELECT COALESCE(MAX(number), 0) FROM trials WHERE experiment_id = ?",
                                   (exp.id,)).fetchone()
            storage = str(storage_of(last + 1)) if storage_of else ""
            conn.execute(
                "INSERT INTO trials (experiment_id, number, hparams, storage, command, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (exp.id, last + 1, hparams_json, storage, command, now, now),
            )
            return last + 1

        number = self._write(insert)
        return self.trial(experiment, number)

    def trial(self, experiment: str, number: int | None = None) -> Trial:
        """One trial by experiment name and number (the newest when ``number`` is None)."""
        if number is None:
            rows = self._query(_TRIAL_SELECT + " WHERE e.name = ? ORDER BY t.number DESC LIMIT 1", (experiment,))
        else:
            rows = self._query(_TRIAL_SELECT + " WHERE e.name = ? AND t.number = ?", (experiment, int(number)))
        if not rows:
            which = f"{experiment}/{number}" if number is not None else experiment
            raise NotFound(f"no trial {which!r} (list them with `unbroken ls`)")
        return _trial(rows[0])

    def trial_by_id(self, trial_id: int) -> Trial:
        rows = self._query(_TRIAL_SELECT + " WHERE t.id = ?", (trial_id,))
        if not rows:
            raise NotFound(f"no trial with id {trial_id}")
        return _trial(rows[0])

    def trials(self, experiment: str | None = None) -> list[Trial]:
        if experiment is None:
            rows = self._query(_TRIAL_SELECT + " ORDER BY e.name, t.number")
        else:
            rows = self._query(_TRIAL_SELECT + " WHERE e.name = ? ORDER BY t.number", (experiment,))
        return [_trial(r) for r in rows]

    def update_trial(self, trial_id: int, **fields: Any) -> None:
        """Set trial columns: status, message, steps_completed, progress, command, hparams."""
        allowed = {"status", "message", "steps_completed", "progress", "command", "hparams"}
        if not fields or set(fields) - allowed:
            raise ConfigError(f"update_trial takes {sorted(allowed)}, not {sorted(set(fields) - allowed)}")
        if "status" in fields and fields["status"] not in TRIAL_STATUSES:
            raise ConfigError(f"unknown trial status {fields['status']!r}")
        if "hparams" in fields:
            fields["hparams"] = _json(fields["hparams"], "hparams")
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._tx([(f"UPDATE trials SET {sets}, updated_at = ? WHERE id = ?", (*fields.values(), time.time(), trial_id))])

    def delete_experiment(self, name: str) -> None:
        exp = self.experiment(name)
        self._tx([("DELETE FROM experiments WHERE id = ?", (exp.id,))])

    # -- attempts ----------------------------------------------------------------------------
    def start_attempt(self, trial_id: int, *, pid: int | None = None, launcher: str = "process",
                      log_path: str | None = None, **slurm: Any) -> Attempt:
        """Record a new attempt of a trial, numbered one past the last; the trial becomes running."""
        now = time.time()
        extra = {k: v for k, v in slurm.items() if k in ("slurm_job_id", "slurm_array_task", "slurm_nodes", "slurm_restarts")}
        cols = ["trial_id", "number", "started_at", "host", "pid", "launcher", "log_path", *extra]

        def insert(conn: sqlite3.Connection) -> int:  # one transaction: see create_trial
            (last,) = conn.execute("SELECT COALESCE(MAX(number), 0) FROM attempts WHERE trial_id = ?",
                                   (trial_id,)).fetchone()
            vals = [trial_id, last + 1, now, socket.gethostname(), pid if pid is not None else os.getpid(),
                    launcher, log_path, *extra.values()]
            cur = conn.execute(f"INSERT INTO attempts ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", vals)
            conn.execute("UPDATE trials SET status = 'running', message = NULL, updated_at = ? WHERE id = ?",
                         (now, trial_id))
            return cur.lastrowid

        return self.attempt(self._write(insert))

    def attempt(self, attempt_id: int) -> Attempt:
        rows = self._query(f"SELECT {', '.join(_ATTEMPT_COLUMNS)} FROM attempts WHERE id = ?", (attempt_id,))
        if not rows:
            raise NotFound(f"no attempt with id {attempt_id}")
        return Attempt(*rows[0])

    def attempts(self, trial_id: int) -> list[Attempt]:
        rows = self._query(f"SELECT {', '.join(_ATTEMPT_COLUMNS)} FROM attempts WHERE trial_id = ? ORDER BY number",
                           (trial_id,))
        return [Attempt(*r) for r in rows]

    def update_attempt(self, attempt_id: int, **fields: Any) -> None:
        """Set attempt columns (pid, log_path, restored_uuid, restored_steps, message, slurm_*)."""
        allowed = set(_ATTEMPT_COLUMNS) - {"id", "trial_id", "number", "started_at"}
        if not fields or set(fields) - allowed:
            raise ConfigError(f"update_attempt takes {sorted(allowed)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._tx([(f"UPDATE attempts SET {sets} WHERE id = ?", (*fields.values(), attempt_id))])

    def end_attempt(self, attempt_id: int, end_reason: str, *, exit_code: int | None = None,
                    signal: int | None = None, message: str | None = None, overwrite: bool = True) -> None:
        """Record how an attempt ended. With ``overwrite=False`` an existing end is kept."""
        if end_reason not in END_REASONS:
            raise ConfigError(f"unknown end reason {end_reason!r}; use one of {END_REASONS}")
        guard = "" if overwrite else " AND end_reason IS NULL"
        self._tx([(
            "UPDATE attempts SET ended_at = ?, end_reason = ?, exit_code = COALESCE(?, exit_code), "
            "signal = COALESCE(?, signal), message = COALESCE(?, message) WHERE id = ?" + guard,
            (time.time(), end_reason, exit_code, signal, message, attempt_id),
        )])

    def close_lost_attempts(self, trial_id: int, alive=None) -> list[int]:
        """Mark attempts still 'running' on this host whose process is gone as ``lost``."""
        alive = alive or _pid_alive
        host = socket.gethostname()
        lost = [a.id for a in self.attempts(trial_id)
                if a.end_reason is None and a.host == host and a.pid and a.pid != os.getpid() and not alive(a.pid)]
        for attempt_id in lost:
            self.end_attempt(attempt_id, "lost", message="the process ended without recording how", overwrite=False)
        return lost

    # -- checkpoints -------------------------------------------------------------------------
    def record_checkpoint(self, trial_id: int, uuid: str, steps_completed: int, *, created_at: float,
                          size_bytes: int, metadata: dict[str, Any], attempt_id: int | None = None,
                          state: str = "committed", message: str | None = None) -> None:
        """Index a checkpoint; a committed one also advances the trial's ``steps_completed``."""
        statements = [
            ("INSERT OR REPLACE INTO checkpoints (uuid, trial_id, attempt_id, steps_completed, created_at, "
             "size_bytes, state, message, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
             (uuid, trial_id, attempt_id, steps_completed, created_at, size_bytes, state, message,
              _json(metadata, "metadata"))),
        ]
        if state == "committed":
            statements.append(("UPDATE trials SET steps_completed = MAX(steps_completed, ?), updated_at = ? "
                               "WHERE id = ?", (steps_completed, time.time(), trial_id)))
        self._tx(statements)

    def mark_checkpoint(self, uuid: str, state: str, message: str | None = None) -> None:
        """Set a checkpoint's state: 'committed', 'corrupt' or 'deleted'."""
        if state not in ("committed", "corrupt", "deleted"):
            raise ConfigError(f"unknown checkpoint state {state!r}")
        self._tx([("UPDATE checkpoints SET state = ?, message = ? WHERE uuid = ?", (state, message, uuid))])

    def checkpoints(self, trial_id: int) -> list[CheckpointRecord]:
        rows = self._query(
            "SELECT uuid, trial_id, attempt_id, steps_completed, created_at, size_bytes, state, message, metadata "
            "FROM checkpoints WHERE trial_id = ? ORDER BY steps_completed, created_at", (trial_id,))
        return [CheckpointRecord(*r[:8], json.loads(r[8])) for r in rows]

    def checkpoint(self, uuid: str) -> CheckpointRecord:
        rows = self._query(
            "SELECT uuid, trial_id, attempt_id, steps_completed, created_at, size_bytes, state, message, metadata "
            "FROM checkpoints WHERE uuid = ?", (uuid,))
        if not rows:
            raise NotFound(f"no checkpoint {uuid} in the index")
        return CheckpointRecord(*rows[0][:8], json.loads(rows[0][8]))

    # -- metrics -----------------------------------------------------------------------------
    def add_metrics(self, trial_id: int, attempt_id: int | None,
                    points: Iterable[tuple[str, int, str, float | None, float]]) -> None:
        """Insert metric points ``(group, steps_completed, name, value, time)`` in one transaction."""
        rows = [(trial_id, attempt_id, g, s, n, v, t) for g, s, n, v, t in points]
        if not rows:
            return
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(
                    "INSERT INTO metrics (trial_id, attempt_id, grp, steps_completed, name, value, time) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise TrackingError(f"tracking database {self.path}: {exc}") from exc

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


def _trial(row: tuple) -> Trial:
    return Trial(row[0], row[1], row[2], json.loads(row[3]), *row[4:])


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must be JSON (numbers, strings, lists, dicts): {exc}") from None

