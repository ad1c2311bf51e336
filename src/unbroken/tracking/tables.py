"""The tables of the index as SQLAlchemy Core objects (the schema at its newest version), and the
few statements whose SQL differs between SQLite and PostgreSQL.

Queries are built from these; the schema itself is created and changed only by the migrations
(:mod:`unbroken.tracking.migrations`), and a test checks that both agree. Ids are 64-bit
(``INTEGER PRIMARY KEY`` on SQLite, ``BIGSERIAL`` on PostgreSQL), times double precision (a
4-byte REAL would round a Unix time to about two minutes), JSON is text. Pure definitions.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.Double()

metadata = sa.MetaData()

experiments = sa.Table(
    "experiments", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("created_at", TIME, nullable=False),
)

trials = sa.Table(
    "trials", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("experiment_id", ID, sa.ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False),
    sa.Column("number", sa.BigInteger, nullable=False),
    sa.Column("hparams", sa.Text, nullable=False, server_default="{}"),
    sa.Column("status", sa.Text, nullable=False, server_default="created"),
    sa.Column("message", sa.Text),
    sa.Column("storage", sa.Text, nullable=False),
    sa.Column("command", sa.Text),
    sa.Column("steps_completed", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("progress", TIME),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("updated_at", TIME, nullable=False),
    sa.UniqueConstraint("experiment_id", "number"),
)

attempts = sa.Table(
    "attempts", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("trial_id", ID, sa.ForeignKey("trials.id", ondelete="CASCADE"), nullable=False),
    sa.Column("number", sa.BigInteger, nullable=False),
    sa.Column("started_at", TIME, nullable=False),
    sa.Column("ended_at", TIME),
    sa.Column("host", sa.Text),
    sa.Column("pid", sa.BigInteger),
    sa.Column("launcher", sa.Text, nullable=False, server_default="process"),
    sa.Column("exit_code", sa.BigInteger),
    sa.Column("signal", sa.BigInteger),
    sa.Column("end_reason", sa.Text),
    sa.Column("message", sa.Text),
    sa.Column("log_path", sa.Text),
    sa.Column("restored_uuid", sa.Text),
    sa.Column("restored_steps", sa.BigInteger),
    sa.Column("slurm_job_id", sa.Text),
    sa.Column("slurm_array_task", sa.Text),
    sa.Column("slurm_nodes", sa.Text),
    sa.Column("slurm_restarts", sa.BigInteger),
    sa.Column("pid_start", TIME),
    sa.UniqueConstraint("trial_id", "number"),
)

checkpoints = sa.Table(
    "checkpoints", metadata,
    sa.Column("uuid", sa.Text, primary_key=True),
    sa.Column("trial_id", ID, sa.ForeignKey("trials.id", ondelete="CASCADE"), nullable=False),
    sa.Column("attempt_id", ID, sa.ForeignKey("attempts.id", ondelete="SET NULL")),
    sa.Column("steps_completed", sa.BigInteger, nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("state", sa.Text, nullable=False, server_default="committed"),
    sa.Column("message", sa.Text),
    sa.Column("metadata", sa.Text, nullable=False, server_default="{}"),
    sa.Index("checkpoints_by_trial", "trial_id", "steps_completed"),
)

metrics = sa.Table(
    "metrics", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("trial_id", ID, sa.ForeignKey("trials.id", ondelete="CASCADE"), nullable=False),
    sa.Column("attempt_id", ID),
    sa.Column("grp", sa.Text, nullable=False),
    sa.Column("steps_completed", sa.BigInteger, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("value", TIME),
    sa.Column("time", TIME, nullable=False),
    sa.Index("metrics_by_trial", "trial_id", "grp", "name", "steps_completed"),
)

#: Rows of :class:`~unbroken.tracking.records.Trial` (see ``records.trial_of``).
TRIAL_SELECT = sa.select(
    trials.c.id, experiments.c.name, trials.c.number, trials.c.hparams, trials.c.status, trials.c.message,
    trials.c.storage, trials.c.command, trials.c.steps_completed, trials.c.progress, trials.c.created_at,
    trials.c.updated_at).join_from(trials, experiments, trials.c.experiment_id == experiments.c.id)
#: Rows of :class:`~unbroken.tracking.records.CheckpointRecord` (see ``records.checkpoint_of``).
CHECKPOINT_SELECT = sa.select(*(checkpoints.c[name] for name in (
    "uuid", "trial_id", "attempt_id", "steps_completed", "created_at", "size_bytes", "state", "message",
    "metadata")))
#: Rows of :class:`~unbroken.tracking.records.MetricPoint`.
METRIC_SELECT = sa.select(metrics.c.grp, metrics.c.steps_completed, metrics.c.name, metrics.c.value,
                          metrics.c.time, metrics.c.attempt_id)


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


def insert_or_ignore(conn: sa.Connection, table: sa.Table, key: str, **values: Any) -> None:
    """INSERT a row unless one with the same unique ``key`` exists (no error, no change)."""
    conn.execute(_insert(conn, table).values(**values).on_conflict_do_nothing(index_elements=[key]))


def upsert(conn: sa.Connection, table: sa.Table, key: str, rows: list[dict[str, Any]]) -> None:
    """INSERT ``rows``, replacing every column of an existing row with the same ``key``."""
    if not rows:
        return
    statement = _insert(conn, table)
    replace = {c: statement.excluded[c] for c in rows[0] if c != key}
    conn.execute(statement.on_conflict_do_update(index_elements=[key], set_=replace), rows)


def locked(conn: sa.Connection, table: sa.Table, row_id: int) -> None:
    """Lock row ``row_id`` of ``table`` until the transaction ends (PostgreSQL ``SELECT ... FOR
    UPDATE``), so that transactions numbering its children take turns. On SQLite the write
    transaction (``BEGIN IMMEDIATE``) already excludes every other writer."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(table.c.id).where(table.c.id == row_id).with_for_update())


def greatest(column: sa.Column, value: Any) -> Any:
    """The larger of ``column`` and ``value`` (MAX(a, b) on SQLite, GREATEST on PostgreSQL)."""
    return sa.case((column < value, value), else_=column)


def next_number(conn: sa.Connection, column: sa.Column, parent: sa.Column, parent_id: int) -> int:
    """One past the largest ``column`` among the rows whose ``parent`` is ``parent_id`` (1 if none)."""
    last = conn.execute(sa.select(sa.func.coalesce(sa.func.max(column), 0)).where(parent == parent_id)).scalar_one()
    return int(last) + 1
