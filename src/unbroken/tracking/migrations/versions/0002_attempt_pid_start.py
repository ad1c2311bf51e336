"""The start time of an attempt's process, so that liveness is judged from (host, pid, start
time) and a reused pid is not taken for the attempt's process.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("pid_start", sa.Double()))
