"""The schema of the first release (0.1): experiments, trials, attempts, checkpoints, metrics.

The same tables as the 0.1 SQLite DDL (:data:`unbroken.tracking.schema.MIGRATIONS` [0]), in
portable types: 64-bit integers, double-precision times. A database made by 0.1 is stamped with
this revision instead of running it.

Revision ID: 0001
Revises: none
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
INT = sa.BigInteger()
TIME = sa.Double()


def _fk(target: str, ondelete: str) -> sa.ForeignKey:
    return sa.ForeignKey(target, ondelete=ondelete)


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", ID, primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_table(
        "trials",
        sa.Column("id", ID, primary_key=True),
        sa.Column("experiment_id", ID, _fk("experiments.id", "CASCADE"), nullable=False),
        sa.Column("number", INT, nullable=False),
        sa.Column("hparams", sa.Text, nullable=False, server_default="{}"),
        sa.Column("status", sa.Text, nullable=False, server_default="created"),
        sa.Column("message", sa.Text),
        sa.Column("storage", sa.Text, nullable=False),
        sa.Column("command", sa.Text),
        sa.Column("steps_completed", INT, nullable=False, server_default="0"),
        sa.Column("progress", TIME),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.UniqueConstraint("experiment_id", "number"),
    )
    op.create_table(
        "attempts",
        sa.Column("id", ID, primary_key=True),
        sa.Column("trial_id", ID, _fk("trials.id", "CASCADE"), nullable=False),
        sa.Column("number", INT, nullable=False),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("ended_at", TIME),
        sa.Column("host", sa.Text),
        sa.Column("pid", INT),
        sa.Column("launcher", sa.Text, nullable=False, server_default="process"),
        sa.Column("exit_code", INT),
        sa.Column("signal", INT),
        sa.Column("end_reason", sa.Text),
        sa.Column("message", sa.Text),
        sa.Column("log_path", sa.Text),
        sa.Column("restored_uuid", sa.Text),
        sa.Column("restored_steps", INT),
        sa.Column("slurm_job_id", sa.Text),
        sa.Column("slurm_array_task", sa.Text),
        sa.Column("slurm_nodes", sa.Text),
        sa.Column("slurm_restarts", INT),
        sa.UniqueConstraint("trial_id", "number"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("uuid", sa.Text, primary_key=True),
        sa.Column("trial_id", ID, _fk("trials.id", "CASCADE"), nullable=False),
        sa.Column("attempt_id", ID, _fk("attempts.id", "SET NULL")),
        sa.Column("steps_completed", INT, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("size_bytes", INT, nullable=False, server_default="0"),
        sa.Column("state", sa.Text, nullable=False, server_default="committed"),
        sa.Column("message", sa.Text),
        sa.Column("metadata", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_index("checkpoints_by_trial", "checkpoints", ["trial_id", "steps_completed"])
    op.create_table(
        "metrics",
        sa.Column("id", ID, primary_key=True),
        sa.Column("trial_id", ID, _fk("trials.id", "CASCADE"), nullable=False),
        sa.Column("attempt_id", ID),
        sa.Column("grp", sa.Text, nullable=False),
        sa.Column("steps_completed", INT, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("value", TIME),
        sa.Column("time", TIME, nullable=False),
    )
    op.create_index("metrics_by_trial", "metrics", ["trial_id", "grp", "name", "steps_completed"])
