"""Bringing the checkpoint table of the index in line with storage, which is the truth.

The caller lists the checkpoints that really exist (tracking never imports checkpoint code) and
:func:`reconcile_checkpoints` applies the difference in one write transaction, in the caller's
thread (it blocks on other writers for up to the busy timeout). It reads the trial's rows with
one query and writes with batched statements: O(rows), no per-row round trips.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, Iterable, Protocol

from ._lazy import lazy_module
from .index import Tracker
from .rows import checkpoint_row, upsert_checkpoints

if TYPE_CHECKING:
    import sqlalchemy

sa = lazy_module("sqlalchemy")
tables = lazy_module("unbroken.tracking.tables")


class StoredCheckpoint(Protocol):
    """What the caller knows of a checkpoint in storage."""

    uuid: str
    steps_completed: int
    created_at: float
    size: int
    metadata: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ReconcileReport:
    """What :func:`reconcile_checkpoints` changed."""

    added: int  # rows inserted (or a 'deleted' row found in storage again), now 'committed'
    marked_deleted: int  # 'committed' or 'corrupt' rows whose checkpoint is gone from storage
    unchanged: int  # rows whose checkpoint is in storage and whose state was kept
    steps_completed: int  # the trial's steps_completed afterwards


def reconcile_checkpoints(tracker: Tracker, trial_id: int, committed: Iterable[StoredCheckpoint],
                          attempt_id: int | None = None) -> ReconcileReport:
    """Make the index's checkpoints of ``trial_id`` match ``committed`` (what storage holds).

    * a checkpoint in storage without a row is inserted as 'committed' (with ``attempt_id``);
      a 'deleted' row of a checkpoint that storage still holds becomes 'committed' again;
    * a 'committed' or 'corrupt' row whose checkpoint is not in storage becomes 'deleted';
    * 'corrupt' rows of checkpoints still in storage are left alone;
    * the trial's ``steps_completed`` becomes that of the newest checkpoint in storage that is
      not marked corrupt (0 if none): the index follows storage, so it may go down when
      checkpoints vanished from storage.

    Raises TrialNotFound for an unknown trial and ConfigError (nothing written) for a stored
    checkpoint with out-of-range values.
    """
    tracker.trial_by_id(trial_id)
    stored = {c.uuid: checkpoint_row(trial_id, c.uuid, c.steps_completed, c.created_at, c.size, c.metadata,
                                     attempt_id, "committed", None) for c in committed}

    def apply(conn: "sqlalchemy.Connection") -> ReconcileReport:
        c, t = tables.checkpoints, tables.trials
        rows = conn.execute(sa.select(c.c.uuid, c.c.state).where(c.c.trial_id == trial_id))
        states = {uuid: state for uuid, state in rows}
        insert = [row for uuid, row in stored.items() if states.get(uuid, "deleted") == "deleted"]
        gone = [{"gone": uuid} for uuid, state in states.items() if uuid not in stored and state != "deleted"]
        upsert_checkpoints(conn, insert)
        if gone:
            conn.execute(c.update().where(c.c.uuid == sa.bindparam("gone"))
                         .values(state="deleted", message="gone from storage"), gone)
        steps = max((row["steps_completed"] for uuid, row in stored.items() if states.get(uuid) != "corrupt"),
                    default=0)
        conn.execute(t.update().where(t.c.id == trial_id).values(steps_completed=steps, updated_at=time.time()))
        return ReconcileReport(len(insert), len(gone), len(stored) - len(insert), steps)

    return tracker._write(apply)
