"""The sweep's own state in the tracking index: one row per sweep, one per sweep trial.

The tables live in the same database as the index (SQLite or PostgreSQL, same URL) but are
created by this package (``CREATE TABLE IF NOT EXISTS`` when a sweep first runs), not by the
index's alembic migrations: the core schema version does not depend on an optional feature,
an index that never ran a sweep has no such tables, and an unbroken without sweeps still opens
one that did. Each row carries ``format`` for later changes of its JSON.

Every decision the driver makes is written here *before* it acts on it (the next segment of a
trial before launching it), and every result as soon as it is seen, so a driver killed at any
moment is replaced by one that reads these rows and carries on. Optuna's study is elsewhere
(:mod:`.optuna_search`). Threads: the driver's main thread only.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import sqlalchemy as sa

from ..errors import ConfigError, NotFound
from ..tracking import _engine
from ..tracking.url import to_url

FORMAT = 1
metadata = sa.MetaData()
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

sweeps = sa.Table(
    "sweeps", metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("definition", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("message", sa.Text),
    sa.Column("format", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

sweep_trials = sa.Table(
    "sweep_trials", metadata,
    sa.Column("sweep_id", ID, sa.ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("number", sa.BigInteger, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

#: States of a sweep trial. ``ready``: its next segment is decided, not yet started.
READY, RUNNING, PAUSED, TERMINATED, ERROR = "ready", "running", "paused", "terminated", "error"
LIVE = (READY, RUNNING, PAUSED)


@dataclasses.dataclass
class TrialRow:
    """What the driver knows about one trial of the sweep (see the module docstring)."""

    number: int
    state: str
    config: dict[str, Any]
    segment: int = 0  # number of the segment decided last (1 = the first)
    stop_at: int | None = None  # where that segment ends (None: the trial's end)
    exploit: dict[str, int] | None = None  # the segment starts from a copy of this donor checkpoint
    results: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)  # iteration -> result
    last_result: dict[str, Any] | None = None
    iteration: int = 0
    handle: dict[str, Any] | None = None  # the executor's handle of the running segment
    relaunches: int = 0  # segments restarted because their process vanished
    message: str | None = None

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["results"] = {str(k): v for k, v in self.results.items()}
        return json.dumps(data, sort_keys=True, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> "TrialRow":
        data = json.loads(text)
        data["results"] = {int(k): v for k, v in data.get("results", {}).items()}
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class SweepRecord:
    id: int
    name: str
    definition: dict[str, Any]
    status: str
    message: str | None
    created_at: float
    updated_at: float


class SweepStore:
    """The sweep tables of one database (``db``: a URL or SQLite path)."""

    def __init__(self, db: str, *, readonly: bool = False):
        self._backend = _engine.connect(to_url(db), readonly=readonly)
        self.readonly = readonly
        if not readonly:
            _engine.write(self._backend, lambda conn: metadata.create_all(conn, checkfirst=True))

    def close(self) -> None:
        self._backend.dispose()

    # -- sweeps --------------------------------------------------------------------------------
    def open_sweep(self, name: str, definition: dict[str, Any]) -> SweepRecord:
        """The sweep ``name``; created with ``definition`` if new. ConfigError if it exists with another one."""
        text = json.dumps(definition, sort_keys=True)
        now = time.time()

        def body(conn):
            row = conn.execute(sa.select(sweeps.c.definition).where(sweeps.c.name == name)).first()
            if row is None:
                conn.execute(sweeps.insert().values(name=name, definition=text, status="running", format=FORMAT,
                                                    created_at=now, updated_at=now))
                return None
            return json.loads(row[0])

        stored = _engine.write(self._backend, body)
        if stored is not None and stored != json.loads(text):
            changed = sorted(k for k in set(stored) | set(definition) if stored.get(k) != definition.get(k))
            raise ConfigError(f"sweep {name!r} exists with another definition (differs in: {', '.join(changed)}); "
                              "run it with the definition it was started with to resume it, or give the new one "
                              "another name")
        return self.sweep(name)

    def sweep(self, name: str) -> SweepRecord:
        rows = self._select(sa.select(sweeps).where(sweeps.c.name == name))
        if not rows:
            raise NotFound(f"no sweep named {name!r} (list them with `unbroken sweep status`)")
        r = rows[0]._mapping
        return SweepRecord(r["id"], r["name"], json.loads(r["definition"]), r["status"], r["message"],
                           r["created_at"], r["updated_at"])

    def sweep_names(self) -> list[str]:
        return [r[0] for r in self._select(sa.select(sweeps.c.name).order_by(sweeps.c.id))]

    def set_status(self, sweep_id: int, status: str, message: str | None = None) -> None:
        statement = sweeps.update().where(sweeps.c.id == sweep_id).values(status=status, message=message,
                                                                            updated_at=time.time())
        _engine.write(self._backend, lambda conn: conn.execute(statement))

    # -- trials ----------------------------------------------------------------------------------
    def trials(self, sweep_id: int) -> dict[int, TrialRow]:
        rows = self._select(sa.select(sweep_trials.c.data).where(sweep_trials.c.sweep_id == sweep_id)
                            .order_by(sweep_trials.c.number))
        return {row.number: row for row in (TrialRow.from_json(r[0]) for r in rows)}

    def save(self, sweep_id: int, row: TrialRow) -> None:
        """Insert or replace ``row`` (one transaction)."""
        values = {"state": row.state, "data": row.to_json(), "updated_at": time.time()}
        key = (sweep_trials.c.sweep_id == sweep_id) & (sweep_trials.c.number == row.number)

        def body(conn):
            if conn.execute(sweep_trials.update().where(key).values(**values)).rowcount == 0:
                conn.execute(sweep_trials.insert().values(sweep_id=sweep_id, number=row.number, **values))

        _engine.write(self._backend, body)

    def _select(self, statement) -> list[Any]:
        def body(conn):
            if not sa.inspect(conn).has_table("sweeps"):
                return []
            return list(conn.execute(statement).all())

        return _engine.read(self._backend, body)
