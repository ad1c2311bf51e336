"""Metric series for charts: cached columns, a window in step or time, LTTB, compact encodings.

A series is one metric (group, name) of one trial. :class:`SeriesCache` keeps its columns in
memory (least recently used first out) and, on each request, reads only the rows added since
(ids above the last one read), so a live trial's chart costs a small query per poll however
long its history. :func:`window` cuts the requested x range and downsamples with LTTB when it
holds more points than the chart has pixels; :func:`encode` turns the result into bytes:

    binary (application/octet-stream):  x Float64[n] | y Float64[n] or Float32[n] | attempt Float32[n]
    json:                              {"x": [...], "y": [...], "attempt": [...]}  (null for NaN)

``attempt`` is the attempt's number (NaN when unknown). Headers carry n, the total in the
window, the last row id (the since-id of the next incremental request) and the step order.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import threading

import numpy as np

from .columns import ROW_DTYPE, ColumnSource
from .lttb import lttb_indices

#: Series kept in memory (a 10^6-point series takes about 40 MB).
CACHE_SIZE = 32
#: The most points one response carries at full resolution (more: downsampled).
MAX_POINTS = 20_000


@dataclasses.dataclass
class Columns:
    """One series in step order (ties: reporting order); ``last_id`` is the highest row id read."""

    rows: np.ndarray
    last_id: int = 0
    _by_time: np.ndarray | None = None

    def extend(self, fresh: np.ndarray) -> None:
        """Add rows read after ``last_id``, keeping step order (a resumed attempt re-reports steps)."""
        if not len(fresh):
            return
        in_order = not len(self.rows) or fresh["steps"][0] >= self.rows["steps"][-1]
        merged = np.concatenate([self.rows, fresh])
        self.rows = merged if in_order else merged[np.lexsort((merged["id"], merged["steps"]))]
        self.last_id = int(max(self.last_id, fresh["id"].max()))
        self._by_time = None

    def ordered(self, x: str) -> np.ndarray:
        """The rows sorted by ``x`` ("step" or "time")."""
        if x == "step":
            return self.rows
        if self._by_time is None:
            self._by_time = self.rows[np.argsort(self.rows["time"], kind="stable")]
        return self._by_time


class SeriesCache:
    """Columns of recently viewed series, refreshed incrementally (see the module docstring)."""

    def __init__(self, size: int = CACHE_SIZE):
        self._size = size
        self._items: collections.OrderedDict[tuple[int, str, str], Columns] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, source: ColumnSource, trial_id: int, group: str, name: str) -> Columns:
        """The series, with every row the index holds now."""
        key = (trial_id, group, name)
        with self._lock:
            cols = self._items.pop(key, None)
            if cols is None:
                cols = Columns(np.zeros(0, dtype=ROW_DTYPE))
            self._items[key] = cols
            while len(self._items) > self._size:
                self._items.popitem(last=False)
            cols.extend(source.rows(trial_id, group, name, cols.last_id))
            return cols


@dataclasses.dataclass(frozen=True)
class Window:
    """What a chart shows: x values, y values, attempt numbers; ``total`` points before downsampling."""

    x: np.ndarray
    y: np.ndarray
    attempt: np.ndarray
    total: int
    last_id: int

    @property
    def downsampled(self) -> bool:
        return len(self.x) < self.total


def window(cols: Columns, numbers: dict[int, int], *, x: str = "step", lo: float = -math.inf,
           hi: float = math.inf, max_points: int = MAX_POINTS, since_id: int = 0) -> Window:
    """The rows of ``cols`` with ``lo <= x <= hi`` (and id above ``since_id``), at most
    ``max_points`` of them (LTTB). ``numbers`` maps attempt ids to attempt numbers."""
    rows = cols.ordered(x)
    xs = rows["steps"] if x == "step" else rows["time"]
    start, stop = np.searchsorted(xs, lo, "left"), np.searchsorted(xs, hi, "right")
    rows, xs = rows[start:stop], xs[start:stop]
    if since_id:
        keep = rows["id"] > since_id
        rows, xs = rows[keep], xs[keep]
    total = len(rows)
    picked = lttb_indices(xs, rows["value"], max(3, min(max_points, MAX_POINTS)))
    rows, xs = rows[picked], xs[picked]
    lookup = np.vectorize(lambda a: numbers.get(int(a), math.nan), otypes=[np.float64])
    attempts = lookup(rows["attempt"]) if len(rows) else np.zeros(0)
    return Window(xs.astype(np.float64), rows["value"].astype(np.float64), attempts, total, cols.last_id)


def encode(win: Window, fmt: str = "f64") -> tuple[bytes, str]:
    """``(body, media type)`` of a window: "f64" / "f32" binary columns (y in that precision) or "json"."""
    if fmt == "json":
        def listed(a: np.ndarray) -> list:
            return [None if not math.isfinite(v) else v for v in a.tolist()]
        doc = {"x": listed(win.x), "y": listed(win.y), "attempt": listed(win.attempt), "total": win.total,
               "last_id": win.last_id}
        return json.dumps(doc, allow_nan=False).encode(), "application/json"
    y = win.y.astype(np.float32) if fmt == "f32" else win.y
    body = win.x.tobytes() + y.tobytes() + win.attempt.astype(np.float32).tobytes()
    return body, "application/octet-stream"


def headers(win: Window) -> dict[str, str]:
    """The response headers describing a window (the page reads them before the bytes)."""
    return {"X-Points": str(len(win.x)), "X-Total": str(win.total), "X-Last-Id": str(win.last_id),
            "X-Downsampled": "1" if win.downsampled else "0"}
