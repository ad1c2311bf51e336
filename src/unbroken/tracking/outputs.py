"""What a trial produced: its checkpoints and metric points. Part of
:class:`~unbroken.tracking.index.Tracker` (same threads, same blocking: one short transaction
per call, through the tracker's ``_write`` / ``_query``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterable

from ..errors import ConfigError, NotFound
from ._lazy import lazy_module
from .records import CheckpointRecord, MetricPoint, checkpoint_of
from .rows import CHECKPOINT_STATES, checkpoint_row, metric_row, upsert_checkpoints
from .values import check_fraction

if TYPE_CHECKING:
    import sqlalchemy

sa = lazy_module("sqlalchemy")
tables = lazy_module("unbroken.tracking.tables")


class OutputsMixin:
    """Checkpoint and metric methods of the Tracker (it provides ``_write``, ``_tx``, ``_query``)."""

    # -- checkpoints -------------------------------------------------------------------------
    def record_checkpoint(self, trial_id: int, uuid: str, steps_completed: int, *, created_at: float,
                          size_bytes: int, metadata: dict[str, Any], attempt_id: int | None = None,
                          state: str = "committed", message: str | None = None) -> None:
        """Index a checkpoint (replacing a row of the same uuid); a committed one also advances
        (never lowers) the trial's ``steps_completed``.

        ConfigError (before anything is written) for steps or a size outside ``[0, 2**63)``.
        """
        row = checkpoint_row(trial_id, uuid, steps_completed, created_at, size_bytes, metadata, attempt_id,
                             state, message)
        t = tables.trials

        def record(conn: "sqlalchemy.Connection") -> None:
            upsert_checkpoints(conn, [row])
            if state == "committed":
                conn.execute(t.update().where(t.c.id == trial_id).values(
                    steps_completed=tables.greatest(t.c.steps_completed, row["steps_completed"]),
                    updated_at=time.time()))

        self._write(record)

    def mark_checkpoint(self, uuid: str, state: str, message: str | None = None) -> None:
        """Set a checkpoint's state: 'committed', 'corrupt' or 'deleted'."""
        if state not in CHECKPOINT_STATES:
            raise ConfigError(f"unknown checkpoint state {state!r}")
        c = tables.checkpoints
        self._tx([c.update().where(c.c.uuid == uuid).values(state=state, message=message)])

    def checkpoints(self, trial_id: int) -> list[CheckpointRecord]:
        c = tables.checkpoints
        rows = self._query(tables.CHECKPOINT_SELECT.where(c.c.trial_id == trial_id)
                           .order_by(c.c.steps_completed, c.c.created_at))
        return [checkpoint_of(r) for r in rows]

    def checkpoint(self, uuid: str) -> CheckpointRecord:
        rows = self._query(tables.CHECKPOINT_SELECT.where(tables.checkpoints.c.uuid == uuid))
        if not rows:
            raise NotFound(f"no checkpoint {uuid} in the index")
        return checkpoint_of(rows[0])

    # -- metrics -----------------------------------------------------------------------------
    def add_metrics(self, trial_id: int, attempt_id: int | None,
                    points: Iterable[tuple[str, int, str, float | None, float]], *,
                    progress: float | None = None) -> None:
        """Insert metric points ``(group, steps_completed, name, value, time)`` in one transaction,
        and set the trial's ``progress`` in the same one when given.

        Values are stored as finite floats or NULL (None, NaN, inf); a bad step or value raises
        ConfigError naming the metric, before anything is written.
        """
        rows = [metric_row(trial_id, attempt_id, *point) for point in points]
        fraction = None if progress is None else check_fraction(progress)
        if not rows and fraction is None:
            return
        t = tables.trials

        def insert(conn: "sqlalchemy.Connection") -> None:
            if rows:
                conn.execute(tables.metrics.insert(), rows)
            if fraction is not None:
                conn.execute(t.update().where(t.c.id == trial_id).values(progress=fraction, updated_at=time.time()))

        self._write(insert)

    def metrics(self, trial_id: int, group: str | None = None, name: str | None = None) -> list[MetricPoint]:
        m = tables.metrics
        select = tables.METRIC_SELECT.where(m.c.trial_id == trial_id)
        if group is not None:
            select = select.where(m.c.grp == group)
        if name is not None:
            select = select.where(m.c.name == name)
        return [MetricPoint(*r) for r in self._query(select.order_by(m.c.steps_completed, m.c.id))]

    def latest_metrics(self, trial_id: int) -> dict[str, dict[str, tuple[int, float | None]]]:
        """For each group and name, the ``(steps_completed, value)`` reported last."""
        m = tables.metrics
        last = sa.select(sa.func.max(m.c.id)).where(m.c.trial_id == trial_id).group_by(m.c.grp, m.c.name)
        rows = self._query(sa.select(m.c.grp, m.c.name, m.c.steps_completed, m.c.value)
                           .where(m.c.id.in_(last)).order_by(m.c.grp, m.c.name))
        out: dict[str, dict[str, tuple[int, float | None]]] = {}
        for grp, name, steps, value in rows:
            out.setdefault(grp, {})[name] = (steps, value)
        return out
