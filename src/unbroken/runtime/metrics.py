"""Metrics reporting, batched and written off the training thread.

``report`` only appends to a queue (microseconds); a daemon thread writes batches into the
tracking index every ``flush_seconds`` or when ``batch_size`` points wait. ``close`` flushes.
A failing write is logged and does not stop training: metrics are not worth a crash.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from typing import Any, Mapping

from ..errors import ConfigError
from ..tracking import Tracker

log = logging.getLogger("unbroken")
_STOP = object()


class MetricsWriter:
    """Background writer of metric points and progress for one trial attempt."""

    def __init__(self, tracker: Tracker, trial_id: int, attempt_id: int | None,
                 flush_seconds: float = 1.0, batch_size: int = 1000):
        self._tracker, self._trial_id, self._attempt_id = tracker, trial_id, attempt_id
        self._flush_seconds, self._batch_size = flush_seconds, batch_size
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="unbroken-metrics", daemon=True)
        self._thread.start()

    def put(self, group: str, steps_completed: int, metrics: Mapping[str, Any]) -> None:
        """Queue metric values (numbers; None and NaN are kept as NULL)."""
        now = time.time()
        for name, value in metrics.items():
            self._queue.put((group, int(steps_completed), str(name), _number(name, value), now))

    def progress(self, fraction: float) -> None:
        self._queue.put(("__progress__", float(fraction)))

    def close(self) -> None:
        """Write everything queued, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def _run(self) -> None:
        stop = False
        while not stop:
            batch, progress, stop = self._collect()
            try:
                self._tracker.add_metrics(self._trial_id, self._attempt_id, batch)
                if progress is not None:
                    self._tracker.update_trial(self._trial_id, progress=progress)
            except Exception as exc:  # noqa: BLE001 - never let metrics kill the run
                log.warning("unbroken: could not write %d metric points: %s", len(batch), exc)

    def _collect(self):
        batch, progress = [], None
        deadline = time.monotonic() + self._flush_seconds
        while len(batch) < self._batch_size:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _STOP:
                return batch, progress, True
            if item[0] == "__progress__":
                progress = item[1]
            else:
                batch.append(item)
        return batch, progress, False


def _number(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if hasattr(value, "item"):  # numpy scalars, 0-d tensors
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"metric {name!r} must be a number, not {type(value).__name__}")
    value = float(value)
    return value if math.isfinite(value) else None
