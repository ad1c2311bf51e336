"""The migrations of the tracking schema, run by alembic (programmatically: no alembic.ini).

``versions/NNNN_*.py`` takes a database from version ``NNNN - 1`` to ``NNNN``; revision ids are
the version numbers written with four digits, so that any code can tell an older or newer
database from its ``alembic_version`` row without importing alembic. Released migrations are
never edited (a test pins them): a change to the schema is a new file at the end, with
:data:`SCHEMA_VERSION` raised to match and :mod:`unbroken.tracking.tables` updated. Operations
that SQLite cannot ALTER in place go through ``op.batch_alter_table`` (batch mode).

Importing this package imports nothing: :mod:`unbroken.tracking.migrate` imports alembic only
when a database needs migrating.
"""

#: The newest schema version, the head revision of ``versions/`` (``f"{SCHEMA_VERSION:04d}"``).
SCHEMA_VERSION = 2


def revision_id(version: int) -> str:
    """The alembic revision id of schema ``version`` (``2 -> "0002"``)."""
    return f"{version:04d}"
