"""Connections of the tracking index by URL, the one write-transaction helper and error translation.

SQLite: one connection (:mod:`._db` opens it: WAL, foreign keys, busy timeout 30 s) behind a
SQLAlchemy engine, shared by the tracker's threads under the tracker's lock; a write transaction
is ``BEGIN IMMEDIATE``, so writers of several processes take turns. PostgreSQL: psycopg 3 and a
small pool whose connections are checked before use (a restarted server costs one failed call,
not every later one); lock waits end after 30 s like SQLite's busy timeout; a reader's sessions
are read-only. Everything runs in the caller's thread and blocks on the database (locks, network).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import TYPE_CHECKING, Any, Callable, NoReturn

from ..errors import ConfigError, TrackingError, UnbrokenError
from . import _db
from ._lazy import lazy_module
from .url import SQLITE, backend_of, mask_password, postgresql_url, sqlite_path

if TYPE_CHECKING:
    import sqlalchemy

sa = lazy_module("sqlalchemy")

#: The execution option that marks a connection's transaction as a write (SQLite: BEGIN IMMEDIATE).
WRITE = "unbroken_write"
#: Python errors raised when a value cannot be bound (too big for INTEGER, wrong type).
_VALUE_ERRORS = (OverflowError, TypeError, ValueError)
_PG_CONNECT_TIMEOUT_S = 10
_PG_LOCK_TIMEOUT = "30s"


@dataclasses.dataclass
class Backend:
    """An open tracking database: its URL, how messages name it, the engine, and on SQLite the
    one connection (None on PostgreSQL)."""

    url: str
    where: str
    engine: "sqlalchemy.Engine"
    raw: sqlite3.Connection | None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def dispose(self) -> None:
        """Roll back and close every connection; never raises."""
        _db.close_quietly(self.raw)
        try:
            self.engine.dispose()
        except Exception as exc:  # noqa: BLE001 - closing must not raise
            _db.log.debug("unbroken: closing the tracking database %s failed: %s", self.where, exc)


def connect(url: str, *, readonly: bool) -> Backend:
    """Open the database at ``url`` (see :mod:`.url`) for writing, or reading only.

    SQLite: as :func:`._db.connect_writable` / :func:`._db.connect_readonly` say (NotFound for a
    reader without a file). PostgreSQL: ConfigError without psycopg; TrackingError naming the URL
    (password masked) when no connection can be made.
    """
    if backend_of(url) == SQLITE:
        return _sqlite(url, readonly)
    return _postgresql(url, readonly)


def _sqlite(url: str, readonly: bool) -> Backend:
    path = sqlite_path(url)
    raw = _db.connect_readonly(path) if readonly else _db.connect_writable(path)
    try:
        engine = sa.create_engine("sqlite://", creator=lambda: raw, poolclass=sa.pool.StaticPool)
        sa.event.listen(engine, "begin", _begin_sqlite)
        engine.connect().close()  # SQLAlchemy initialises its dialect on the first connection
    except BaseException:
        _db.close_quietly(raw)
        raise
    return Backend(url, str(path), engine, raw)


def _begin_sqlite(conn: "sqlalchemy.Connection") -> None:
    # The connection is in autocommit mode (isolation_level=None): SQLAlchemy's transaction is
    # made real here. Reads run without one (each statement is atomic).
    if conn.get_execution_options().get(WRITE):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _postgresql(url: str, readonly: bool) -> Backend:
    where = mask_password(url)
    try:
        import psycopg  # noqa: F401 - fail here with the way out, not deep in SQLAlchemy
    except ImportError:
        raise ConfigError(f"the tracking database {where} is PostgreSQL, which needs the psycopg driver: "
                          "pip install 'unbroken[postgres]'") from None
    engine = sa.create_engine(postgresql_url(url), pool_pre_ping=True, pool_size=1, max_overflow=4,
                              hide_parameters=True,
                              connect_args={"connect_timeout": _PG_CONNECT_TIMEOUT_S, "application_name": "unbroken"})
    sa.event.listen(engine, "connect", _session_settings(readonly))
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        engine.dispose()
        raise TrackingError(f"cannot connect to the tracking database {where}: {reason(exc, url)}") from exc
    return Backend(url, where, engine, None)


def _session_settings(readonly: bool) -> Callable[[Any, Any], None]:
    statements = [f"SET lock_timeout = '{_PG_LOCK_TIMEOUT}'"]
    if readonly:
        statements.append("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.autocommit = True
        with dbapi_conn.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
        dbapi_conn.autocommit = False

    return on_connect


def write(backend: Backend, body: Callable[["sqlalchemy.Connection"], Any]) -> Any:
    """Run ``body(connection)`` in one write transaction and commit; return its result.

    On ANY exception the transaction is rolled back and the original cause raised as
    :func:`translate` says, so the connection is usable afterwards. Blocks on other writers
    (SQLite's busy timeout, PostgreSQL's lock timeout). The caller holds the tracker's lock.
    """
    try:
        with backend.engine.connect() as conn:
            conn.execution_options(**{WRITE: True})
            with conn.begin():
                return body(conn)
    except BaseException as exc:
        _reraise(exc, backend)


def read(backend: Backend, body: Callable[["sqlalchemy.Connection"], Any]) -> Any:
    """Run ``body(connection)`` for reading (no transaction left open); errors as in :func:`write`."""
    try:
        with backend.engine.connect() as conn:
            return body(conn)
    except BaseException as exc:
        _reraise(exc, backend)


def query(backend: Backend, statement: Any, params: Any = None) -> list[Any]:
    """Run one query (a statement, or SQL text with ``:name`` parameters) and fetch all rows."""
    if isinstance(statement, str):
        statement = sa.text(statement)
    return read(backend, lambda conn: list(conn.execute(statement, params or {}).all()))


def _reraise(exc: BaseException, backend: Backend) -> NoReturn:
    error = translate(exc, backend)
    if error is exc:
        raise exc
    raise error from exc


def translate(exc: BaseException, backend: Backend) -> BaseException:
    """The error to raise for ``exc`` met while using ``backend``.

    unbroken's own errors and non-``Exception`` (KeyboardInterrupt) pass unchanged; values that
    cannot be stored become :class:`ConfigError`; everything else :class:`TrackingError` naming
    the database and the driver's message (e.g. "database or disk is full").
    """
    if isinstance(exc, UnbrokenError) or not isinstance(exc, Exception):
        return exc
    cause = exc.orig if isinstance(exc, sa.exc.StatementError) and exc.orig is not None else exc
    if isinstance(cause, _VALUE_ERRORS):
        return ConfigError(f"tracking database {backend.where}: a value cannot be stored: {cause}")
    if isinstance(exc, sa.exc.DBAPIError) or isinstance(cause, sqlite3.Error):
        return TrackingError(f"tracking database {backend.where}: {reason(exc, backend.url)}")
    return TrackingError(f"tracking database {backend.where}: {type(exc).__name__}: {exc}")


def reason(exc: BaseException, url: str) -> str:
    """The driver's message for ``exc`` (without SQLAlchemy's SQL echo), the password masked."""
    cause = getattr(exc, "orig", None) or exc
    text = " ".join(str(cause).split()) or type(cause).__name__
    if getattr(exc, "connection_invalidated", False):
        text = f"the connection was lost ({text})"
    password = _password(url)
    return text.replace(password, "***") if password else text


def _password(url: str) -> str | None:
    import urllib.parse

    try:
        return urllib.parse.urlsplit(url).password
    except ValueError:
        return None
