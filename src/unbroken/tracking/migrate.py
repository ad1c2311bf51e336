"""Schema versions of the index: reading a database's version, refusing a newer one, and bringing
an older one to the newest in place.

The version is alembic's revision (``alembic_version``, ``"0002"`` is 2); on SQLite also
``PRAGMA user_version``, which the first release wrote and every version keeps in step, so that
an older unbroken refuses a newer file and a file of the first release (no alembic table yet) is
recognised and stamped. Everything runs on the caller's connection inside the caller's
transaction, in the caller's thread; alembic is imported only when a migration is due.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import TrackingError
from ._lazy import lazy_module
from .migrations import SCHEMA_VERSION, revision_id

if TYPE_CHECKING:
    import sqlalchemy

sa = lazy_module("sqlalchemy")

VERSION_TABLE = "alembic_version"
#: Key of the PostgreSQL advisory lock that migrating processes take turns on ("unbrkn").
_PG_MIGRATION_LOCK = 0x756E62726B6E


def stored_version(conn: "sqlalchemy.Connection", where: str) -> int:
    """The schema version of the database on ``conn``: 0 when it has no schema yet.

    TrackingError ("upgrade unbroken") for a revision that is not a version number.
    """
    return _versions(conn, where)[0]


def _versions(conn: "sqlalchemy.Connection", where: str) -> tuple[int, bool]:
    """(the schema version, whether alembic's version table is there)."""
    version, stamped = 0, sa.inspect(conn).has_table(VERSION_TABLE)
    if stamped:
        revisions = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        for revision in revisions:
            if not revision.isdigit():
                raise TrackingError(f"tracking database {where} has schema revision {revision!r}, which this "
                                    f"unbroken does not know (it knows up to {SCHEMA_VERSION}): upgrade unbroken")
            version = max(version, int(revision))
    if conn.dialect.name == "sqlite":
        version = max(version, conn.exec_driver_sql("PRAGMA user_version").scalar_one())
    return version, stamped


def check_version(version: int, where: str, *, readonly: bool) -> None:
    """TrackingError for a version newer than this code's, or (for a reader) no schema at all."""
    if version > SCHEMA_VERSION:
        raise TrackingError(f"tracking database {where} has schema version {version}, newer than this unbroken "
                            f"knows ({SCHEMA_VERSION}): upgrade unbroken")
    if readonly and version == 0:
        raise TrackingError(f"tracking database {where} is empty (no schema yet)")


def upgrade(conn: "sqlalchemy.Connection", where: str) -> None:
    """Bring the database to :data:`SCHEMA_VERSION`, inside the caller's write transaction.

    Processes doing it at once take turns (SQLite: the write transaction; PostgreSQL: an
    advisory lock held until the transaction ends), and the version is read after the turn
    comes, so the migration runs once. A SQLite file of a version from before alembic is
    stamped with its version first. Raises TrackingError for a newer database.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
    version, stamped = _versions(conn, where)
    check_version(version, where, readonly=False)
    if version == SCHEMA_VERSION and stamped:
        return
    _run_alembic(conn, version, stamped)
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _run_alembic(conn: "sqlalchemy.Connection", version: int, stamped: bool) -> None:
    from alembic import command
    from alembic.config import Config

    from . import migrations

    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.attributes["connection"] = conn
    if version and not stamped:
        command.stamp(config, revision_id(version))  # made before alembic (user_version only): stamp it
    command.upgrade(config, revision_id(SCHEMA_VERSION))
