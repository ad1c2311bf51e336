"""SQLite files of the tracking index: opening the connection, telling a corrupt file, and moving
it aside (:mod:`._engine` puts the connection behind SQLAlchemy and owns transactions).

Nothing here knows the schema. Callers hold their own lock around a connection; these functions
run in the caller's thread and block only on SQLite (its busy timeout, 30 s) and the file system.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import Iterator

from ..errors import NotFound, TrackingError

log = logging.getLogger("unbroken")

#: How long a connection waits for another writer's lock before failing (seconds).
BUSY_TIMEOUT = 30.0
#: SQLite primary result codes that mean "this file is not a (sound) database".
_CORRUPTION_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
_CORRUPTION_TEXT = ("file is not a database", "database disk image is malformed")


def connect_writable(path: Path) -> sqlite3.Connection:
    """Open (creating it and its folder) a database in WAL mode, autocommit, shareable by threads."""
    conn = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, check_same_thread=False, isolation_level=None)
        _wal_mode(conn)
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn
    except (sqlite3.Error, OSError) as exc:
        close_quietly(conn)
        raise TrackingError(f"cannot open tracking database {path}: {exc}") from exc


def _wal_mode(conn: sqlite3.Connection) -> None:
    """Switch to WAL. Switching needs an exclusive lock, and SQLite answers "database is locked" at
    once (without its busy handler) when another process switches the same new file at that moment:
    retry until the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def connect_readonly(path: Path) -> sqlite3.Connection:
    """Open an existing database for reading only; never creates or changes a file.

    ``mode=ro`` first; where that fails because the WAL index (``-shm``) cannot be created (a
    read-only folder or file system), ``immutable=1``, which reads the main file as it is and
    ignores a WAL left by a writer that did not close (its last transactions are not seen).
    Raises :class:`~unbroken.errors.NotFound` when there is no file.
    """
    if not path.is_file():
        raise NotFound(f"no tracking index at {path}")
    first: sqlite3.Error | None = None
    for params in ("mode=ro", "mode=ro&immutable=1"):
        conn = None
        try:
            uri = f"file:{urllib.parse.quote(str(path.resolve()))}?{params}"
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, check_same_thread=False,
                                   isolation_level=None)
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # opening is lazy: touch it
            return conn
        except sqlite3.Error as exc:
            close_quietly(conn)
            if is_corruption(exc):
                raise TrackingError(f"cannot read tracking database {path}: {exc}") from exc
            first = first or exc
    raise TrackingError(f"cannot open tracking database {path} read-only: {first}") from first


def close_quietly(conn: sqlite3.Connection | None) -> None:
    """Roll back an open transaction and close; never raises (errors are logged at debug level)."""
    if conn is None:
        return
    rollback_quietly(conn)
    try:
        conn.close()
    except Exception as exc:  # noqa: BLE001 - closing must not raise
        log.debug("unbroken: closing the tracking database failed: %s", exc)


def rollback_quietly(conn: sqlite3.Connection) -> None:
    """ROLLBACK if (and only if) a transaction is active; never raises.

    SQLite may already have rolled back by itself (a full disk, an I/O error): then there is
    nothing to do, and a ROLLBACK would fail with "no transaction is active".
    """
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except Exception as exc:  # noqa: BLE001 - the original error is the one worth raising
        log.debug("unbroken: rollback of the tracking database failed: %s", exc)


def is_corruption(exc: BaseException | None) -> bool:
    """True if ``exc`` (or what it was raised from, or SQLAlchemy's ``orig``) says the file is not a
    sound SQLite database."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, sqlite3.DatabaseError):
            code = getattr(exc, "sqlite_errorcode", None)
            if (code is not None and code & 0xFF in _CORRUPTION_CODES) or any(
                    text in str(exc) for text in _CORRUPTION_TEXT):
                return True
        exc = getattr(exc, "orig", None) or exc.__cause__
    return False


@contextlib.contextmanager
def rebuild_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``path`` so that one process at a time moves it aside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.rebuild-lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def move_aside(path: Path) -> Path:
    """Rename ``path`` and its ``-wal``/``-shm`` to ``<path>.corrupt-<timestamp>[-wal|-shm]``.

    Returns the new name of the main file. The caller holds :func:`rebuild_lock`.
    """
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}.{n}")
    for suffix in ("-wal", "-shm", ""):  # the main file last: a crash in between leaves it in place
        side = Path(f"{path}{suffix}")
        if side.exists():
            os.replace(side, Path(f"{target}{suffix}"))
    return target
