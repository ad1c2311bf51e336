"""Reading metric columns and per-metric statistics from the index, fast.

The Tracker's read API returns one dataclass per point, which costs seconds for 10^6 points and
has no "only what is new" form. Where the index is a SQLite file, :class:`SqliteColumns` reads
it directly over its own read-only connection (never writing, like the Tracker opened with
``open_readonly``): one metric's rows after a given id, as numpy columns, and the statistics of
every metric of a trial. :class:`TrackerColumns` gives the same answers through the public
Tracker API for any other index (e.g. a database reached by URL), only slower.

A proper home for these queries is the tracking layer (``Tracker.metric_columns(trial, group,
name, since_id)`` and ``Tracker.metric_stats(trial_ids)``); they live here because this package
may not change the tracking layer.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import urllib.parse
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import TrackingError
from ..tracking import Tracker

#: The numpy layout of metric rows: step, value (NaN for null), time, attempt id (-1: none), row id.
ROW_DTYPE = np.dtype([("steps", "f8"), ("value", "f8"), ("time", "f8"), ("attempt", "i8"), ("id", "i8")])


@dataclasses.dataclass(frozen=True)
class Stat:
    """One metric of one trial: the point reported last (highest id), the smallest and largest
    finite value (None when none), the number of points, and the highest row id (its version)."""

    steps_completed: int
    value: float | None
    min: float | None
    max: float | None
    points: int
    last_id: int


#: ``{trial_id: {(group, name): Stat}}``
Stats = dict[int, dict[tuple[str, str], Stat]]


class ColumnSource(Protocol):
    def rows(self, trial_id: int, group: str, name: str, since_id: int = 0) -> np.ndarray: ...
    def stats(self, trial_ids: list[int]) -> Stats: ...
    def close(self) -> None: ...


def column_source(tracker: Tracker) -> ColumnSource:
    """The fast SQLite reader when the tracker's index is a SQLite file, else the Tracker fallback."""
    path = Path(getattr(tracker, "path", "") or "")
    if path.is_file():
        with path.open("rb") as f:
            if f.read(16) == b"SQLite format 3\x00":
                return SqliteColumns(path)
    return TrackerColumns(tracker)


class SqliteColumns:
    """Direct read-only queries on a SQLite index (see the module docstring). Thread-safe."""

    _ROWS = ("SELECT steps_completed, IFNULL(value, 'nan'), time, IFNULL(attempt_id, -1), id FROM metrics "
             "WHERE trial_id = ? AND grp = ? AND name = ? AND id > ? ORDER BY steps_completed, id")
    _AGGREGATES = ("SELECT trial_id, grp, name, MIN(value), MAX(value), COUNT(*) FROM metrics {where} "
                   "GROUP BY trial_id, grp, name")
    _LATEST = ("SELECT trial_id, grp, name, MAX(id), steps_completed, value FROM metrics {where} "
               "GROUP BY trial_id, grp, name")  # SQLite: bare columns come from the MAX(id) row

    def __init__(self, path: Path):
        uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
        try:
            self._conn = sqlite3.connect(uri, uri=True, timeout=30.0, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise TrackingError(f"cannot open tracking database {path} read-only: {exc}") from exc
        self.path = path
        self._lock = threading.Lock()
        self._stats: Stats = {}
        self._watermark = -1  # highest metric id folded into self._stats

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise TrackingError(f"cannot read tracking database {self.path}: {exc}") from exc

    def rows(self, trial_id: int, group: str, name: str, since_id: int = 0) -> np.ndarray:
        """The points of one metric with an id above ``since_id``, in step (then id) order."""
        with self._lock:
            try:
                cursor = self._conn.execute(self._ROWS, (trial_id, group, name, since_id))
                return np.fromiter(cursor, dtype=ROW_DTYPE)
            except sqlite3.Error as exc:
                raise TrackingError(f"cannot read tracking database {self.path}: {exc}") from exc

    def stats(self, trial_ids: list[int]) -> Stats:
        """The :class:`Stat` of every metric of ``trial_ids``. Cached: a call reads only the trials
        that reported since the last call (found from the ids above a watermark), so a page of
        1,000 trials costs one full pass once and milliseconds afterwards."""
        (top,) = self._query("SELECT IFNULL(MAX(id), 0) FROM metrics")[0]
        if self._watermark < 0:
            self._stats = self._read_stats("")
        elif top != self._watermark:
            changed = [r[0] for r in self._query(
                "SELECT DISTINCT trial_id FROM metrics NOT INDEXED WHERE id > ?", (self._watermark,))]
            for start in range(0, len(changed), 500):
                chunk = changed[start:start + 500]
                fresh = self._read_stats(f"WHERE trial_id IN ({', '.join('?' * len(chunk))})", tuple(chunk))
                self._stats.update({t: fresh.get(t, {}) for t in chunk})
        self._watermark = top
        return {t: self._stats.get(t, {}) for t in trial_ids}

    def _read_stats(self, where: str, args: tuple = ()) -> Stats:
        latest = {(t, g, n): (i, s, v) for t, g, n, i, s, v in self._query(self._LATEST.format(where=where), args)}
        out: Stats = {}
        for t, g, n, lo, hi, count in self._query(self._AGGREGATES.format(where=where), args):
            last_id, steps, value = latest[(t, g, n)]
            out.setdefault(t, {})[(g, n)] = Stat(steps, value, lo, hi, count, last_id)
        return out

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class TrackerColumns:
    """The same answers through the public Tracker API (any index; reads every point each time)."""

    def __init__(self, tracker: Tracker):
        self._tracker = tracker

    def rows(self, trial_id: int, group: str, name: str, since_id: int = 0) -> np.ndarray:
        points = self._tracker.metrics(trial_id, group=group, name=name)
        out = np.zeros(len(points), dtype=ROW_DTYPE)
        for i, p in enumerate(points):  # no row ids here: the position stands for one
            out[i] = (p.steps_completed, np.nan if p.value is None else p.value, p.time,
                      -1 if p.attempt_id is None else p.attempt_id, i + 1)
        return out[out["id"] > since_id]

    def stats(self, trial_ids: list[int]) -> Stats:
        out: Stats = {}
        for trial_id in trial_ids:
            series: dict[tuple[str, str], list] = {}
            for p in self._tracker.metrics(trial_id):
                series.setdefault((p.group, p.name), []).append(p.value)
            latest = self._tracker.latest_metrics(trial_id)
            out[trial_id] = {
                (g, n): Stat(steps, value, min(finite, default=None), max(finite, default=None), len(values),
                             len(values))
                for g, names in latest.items() for n, (steps, value) in names.items()
                for values in [series.get((g, n), [])] for finite in [[v for v in values if v is not None]]}
        return out

    def close(self) -> None:
        pass
