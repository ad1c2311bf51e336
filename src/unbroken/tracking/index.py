"""The tracking index: experiments, trials, attempts, checkpoints and metrics, in SQLite (the
default, ``<home>/unbroken.db``) or PostgreSQL, chosen by URL (:mod:`unbroken.tracking.url`).

The index is for people and dashboards, never the truth: restoring never needs it, and its
checkpoint table can be rebuilt from storage (:mod:`unbroken.tracking.reconcile`). One
``Tracker`` may be shared by threads (a lock serialises them); each call is one short
transaction and blocks only on the database's locks (30 s at most) and, on PostgreSQL, the
network. Several processes (a supervisor and its child, a thousand trials of a sweep) may write
at once: SQLite is in WAL mode and writers take turns; on PostgreSQL the transactions that
number trials and attempts lock the parent row.

Every write goes through :meth:`Tracker._write`, which rolls back on any exception and raises
the real cause as TrackingError (or ConfigError for a value that cannot be stored), so one failed
write never breaks the next. Values are validated before anything is written.

Opening a tracker imports SQLAlchemy (and psycopg for PostgreSQL; alembic only when the schema
must be created or migrated); importing this module does not.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ..config import DB_FILENAME, check_name, resolve_home
from ..errors import ConfigError, NotFound, TrackingError, TrialNotFound, UnbrokenWarning
from . import _db, _engine, _lazy, migrate
from .attempts import AttemptsMixin
from .outputs import OutputsMixin
from .records import ATTEMPT_COLUMNS, Experiment, Trial, to_json, trial_of
from .rows import insert_trial, next_trial_number
from .status import TRIAL_STATUSES
from .url import SQLITE, resolve_db_url, sqlite_path, to_url
from .values import check_fraction, check_steps

if TYPE_CHECKING:
    import sqlalchemy

sa = _lazy.lazy_module("sqlalchemy")
tables = _lazy.lazy_module("unbroken.tracking.tables")

__all__ = ["Tracker"]


class Tracker(AttemptsMixin, OutputsMixin):
    """A connection to one tracking database.

    ``Tracker(db)`` opens read-write, creating and migrating the database; ``db`` is a path
    (SQLite), ``sqlite:///PATH`` or ``postgresql://USER@HOST:PORT/DB``. :meth:`open` picks the
    database as :func:`~unbroken.tracking.url.resolve_db_url` says; :meth:`open_readonly` and
    :meth:`open_or_rebuild` are the other ways in.
    """

    #: The URL opened (with its password), how messages name it (path, or URL with the password
    #: masked), and the SQLite file (None on PostgreSQL).
    url: str
    where: str
    path: Path | None

    def __init__(self, db: str | os.PathLike[str]):
        self._setup(to_url(db), readonly=False)

    def _setup(self, url: str, *, readonly: bool) -> None:
        _lazy.load(sa, tables)
        self._backend = _engine.connect(url, readonly=readonly)
        self.url, self.where, self._readonly, self._closed = url, self._backend.where, readonly, False
        self.path = sqlite_path(url) if self._backend.dialect == SQLITE else None
        #: The one SQLite connection (None on PostgreSQL): package-private, for tests.
        self._conn = self._backend.raw
        self._lock = threading.RLock()
        try:
            if readonly:
                migrate.check_version(self.schema_version(), self.where, readonly=True)
            else:
                self._migrate()
            present = self._read(lambda conn: {c["name"] for c in sa.inspect(conn).get_columns("attempts")})
        except BaseException:
            self._backend.dispose()
            raise
        self._attempt_select = sa.select(*(tables.attempts.c[c] if c in present else sa.null().label(c)
                                           for c in ATTEMPT_COLUMNS))

    @classmethod
    def open(cls, db: str | os.PathLike[str] | None = None, *, home: str | os.PathLike[str] | None = None,
             readonly: bool = False, rebuild: bool = False) -> "Tracker":
        """The one entry point: the database ``db``, else ``$UNBROKEN_DB``, else ``<home>/unbroken.db``
        (``home`` defaults to the home folder); read-only (:meth:`open_readonly`), rebuilt when
        corrupt (:meth:`open_or_rebuild`) or plainly read-write."""
        if readonly and rebuild:
            raise ConfigError("open a tracker either readonly or with rebuild, not both")
        url = resolve_db_url(db, Path(home) if home is not None else resolve_home())
        if readonly:
            return cls.open_readonly(url)
        return cls.open_or_rebuild(url) if rebuild else cls(url)

    @classmethod
    def in_home(cls, home: Path) -> "Tracker":
        """The SQLite index ``<home>/unbroken.db``, read-write (``$UNBROKEN_DB`` is not consulted:
        :meth:`open` is the way that honours it)."""
        return cls(Path(home) / DB_FILENAME)

    @classmethod
    def open_readonly(cls, db: str | os.PathLike[str]) -> "Tracker":
        """Open an existing index for reading (CLI, dashboard); writes raise TrackingError.

        SQLite: never creates a file: NotFound ("no tracking index at PATH") if there is none;
        works on a read-only folder or file system (see :func:`._db.connect_readonly`).
        PostgreSQL: the sessions are read-only. An index of an older schema is read as it is
        (columns it lacks read as None); one without a schema is a TrackingError.
        """
        tracker = cls.__new__(cls)
        tracker._setup(to_url(db), readonly=True)
        return tracker

    @classmethod
    def open_or_rebuild(cls, db: str | os.PathLike[str]) -> "Tracker":
        """Open ``db`` read-write; if it is a corrupt SQLite file (not a database, malformed), move
        it and its -wal/-shm aside to ``<path>.corrupt-<timestamp>``, warn (UnbrokenWarning naming
        both paths) and start a fresh index. The caller re-indexes checkpoints from storage.

        Other errors (permissions, a newer schema, an unreachable server) are raised. Processes
        rebuilding at once take turns under a lock file beside the index, so a fresh index is
        never moved aside. A PostgreSQL database is opened as :class:`Tracker` does.
        """
        url = to_url(db)
        try:
            return cls(url)
        except TrackingError as exc:
            if not _db.is_corruption(exc):
                raise
        path = sqlite_path(url)
        with _db.rebuild_lock(path):
            try:
                return cls(url)  # another process may have rebuilt it meanwhile
            except TrackingError as exc:
                if not _db.is_corruption(exc):
                    raise
                reason = str(exc)
            moved = _db.move_aside(path)
            warnings.warn(f"the tracking index {path} is corrupt ({reason}); moved it to {moved} and started a "
                          "new one (checkpoints are re-indexed from storage)", UnbrokenWarning, stacklevel=2)
            return cls(url)

    def close(self) -> None:
        """Roll back anything pending and close. Never raises; closing twice is harmless."""
        with self._lock:
            self._closed = True
            self._backend.dispose()

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Tracker {self.where}{' (read-only)' if self._readonly else ''}>"

    @property
    def readonly(self) -> bool:
        return self._readonly

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._backend.dialect

    # -- plumbing ----------------------------------------------------------------------------
    def _write(self, body: Callable[["sqlalchemy.Connection"], Any]) -> Any:
        """Run ``body(connection)`` in one write transaction (see :func:`._engine.write`):
        committed if it returns, rolled back on any exception, raised as TrackingError/ConfigError.

        Package-private: :mod:`.trials` and :mod:`.reconcile` write through it too.
        """
        with self._lock:
            self._check_open()
            if self._readonly:
                raise TrackingError(f"tracking database {self.where} is open read-only")
            return _engine.write(self._backend, body)

    def _tx(self, statements: Iterable[Any]) -> None:
        """Run SQLAlchemy statements in one write transaction."""
        statements = list(statements)
        self._write(lambda conn: [conn.execute(statement) for statement in statements])

    def _read(self, body: Callable[["sqlalchemy.Connection"], Any]) -> Any:
        with self._lock:
            self._check_open()
            return _engine.read(self._backend, body)

    def _query(self, statement: Any, params: Any = None) -> list[Any]:
        """Rows of one query: a SQLAlchemy statement, or SQL text with ``:name`` parameters."""
        with self._lock:
            self._check_open()
            return _engine.query(self._backend, statement, params)

    def _check_open(self) -> None:
        if self._closed:
            raise TrackingError(f"tracking database {self.where} is closed")

    def _migrate(self) -> None:
        try:
            self._write(lambda conn: migrate.upgrade(conn, self.where))
        except TrackingError as exc:
            cause = exc.__cause__
            if cause is None or isinstance(cause, (TrackingError, KeyboardInterrupt)):
                raise
            raise TrackingError(f"cannot migrate tracking database {self.where}: "
                                f"{_engine.reason(cause, self.url)}") from cause

    def schema_version(self) -> int:
        """The database's schema version (0: no schema yet)."""
        return self._read(lambda conn: migrate.stored_version(conn, self.where))

    # -- experiments and trials --------------------------------------------------------------
    def experiment(self, name: str, *, create: bool = False) -> Experiment:
        """The experiment called ``name``; created if ``create``, else NotFound."""
        check_name(name)
        e = tables.experiments
        if create:
            self._write(lambda conn: tables.insert_or_ignore(conn, e, "name", name=name, created_at=time.time()))
        rows = self._query(sa.select(e.c.id, e.c.name, e.c.created_at).where(e.c.name == name))
        if not rows:
            raise NotFound(f"no experiment named {name!r} (list them with `unbroken ls`)")
        return Experiment(*rows[0])

    def experiments(self) -> list[Experiment]:
        e = tables.experiments
        return [Experiment(*r) for r in self._query(sa.select(e.c.id, e.c.name, e.c.created_at).order_by(e.c.id))]

    def create_trial(self, experiment: str, *, hparams: dict[str, Any] | None = None,
                     storage_of=None, command: str | None = None) -> Trial:
        """Add a trial numbered one past the last of ``experiment``; ``storage_of(number)`` names its storage.

        To find or create a trial (resume the newest, a numbered one, or a fresh one) use
        :func:`unbroken.tracking.join_trial`.
        """
        exp = self.experiment(experiment, create=True)
        hparams_json = to_json(hparams or {}, "hparams")

        # Read the last number and insert in one write transaction, with the experiment locked,
        # so that processes creating trials of the same experiment at once never pick the same number.
        def insert(conn: "sqlalchemy.Connection") -> int:
            return insert_trial(conn, exp.id, next_trial_number(conn, exp.id), hparams_json, storage_of, command)

        return self.trial_by_id(self._write(insert))

    def trial(self, experiment: str, number: int | None = None) -> Trial:
        """One trial by experiment name and number (the newest when ``number`` is None); TrialNotFound."""
        t, select = tables.trials, tables.TRIAL_SELECT.where(tables.experiments.c.name == experiment)
        if number is None:
            rows = self._query(select.order_by(t.c.number.desc()).limit(1))
        else:
            rows = self._query(select.where(t.c.number == check_steps(number, "trial number")))
        if not rows:
            which = f"{experiment}/{number}" if number is not None else experiment
            raise TrialNotFound(f"no trial {which!r} (list them with `unbroken ls`)")
        return trial_of(rows[0])

    def trial_by_id(self, trial_id: int) -> Trial:
        rows = self._query(tables.TRIAL_SELECT.where(tables.trials.c.id == trial_id))
        if not rows:
            raise TrialNotFound(f"no trial with id {trial_id}")
        return trial_of(rows[0])

    def trials(self, experiment: str | None = None) -> list[Trial]:
        e, t = tables.experiments, tables.trials
        if experiment is None:
            select = tables.TRIAL_SELECT.order_by(e.c.name, t.c.number)
        else:
            select = tables.TRIAL_SELECT.where(e.c.name == experiment).order_by(t.c.number)
        return [trial_of(r) for r in self._query(select)]

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
        t = tables.trials
        self._tx([t.update().where(t.c.id == trial_id).values(**fields, updated_at=time.time())])

    def delete_experiment(self, name: str) -> None:
        exp = self.experiment(name)
        self._tx([tables.experiments.delete().where(tables.experiments.c.id == exp.id)])
