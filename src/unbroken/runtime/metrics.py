"""Metrics reporting, batched and written off the training thread.

``put`` validates in the caller's thread (a bad step or value is a ConfigError there, naming the
metric) and appends to a queue (microseconds). A daemon thread writes batches into the tracking
index every ``flush_seconds``, when ``batch_size`` points wait, soon after a progress update
(at most one progress write per ``progress_seconds``), and on :meth:`flush`/:meth:`close`.
A failing write is logged and does not stop training, nor later writes: metrics are not worth
a crash.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Mapping, NamedTuple

from ..errors import ConfigError
from ..tracking import Tracker, check_steps, metric_value
from ..tracking.values import check_fraction

log = logging.getLogger("unbroken")
_STOP = object()


class _Progress(NamedTuple):
    fraction: float


class _Flush:
    """A marker in the queue: set once everything queued before it has been written."""

    def __init__(self) -> None:
        self.done = threading.Event()


class MetricsWriter:
    """Background writer of metric points and progress for one trial attempt."""

    def __init__(self, tracker: Tracker, trial_id: int, attempt_id: int | None,
                 flush_seconds: float = 1.0, batch_size: int = 1000, progress_seconds: float = 0.1):
        self._tracker, self._trial_id, self._attempt_id = tracker, trial_id, attempt_id
        self._flush_seconds, self._batch_size = flush_seconds, batch_size
        self._progress_seconds = progress_seconds
        self._last_write = float("-inf")  # monotonic time of the last write (writer thread only)
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="unbroken-metrics", daemon=True)
        self._thread.start()

    def put(self, group: str, steps_completed: int, metrics: Mapping[str, Any]) -> None:
        """Queue metric values; caller's thread, never blocks.

        Values are numbers or one-element arrays/tensors; None, NaN and inf are stored as NULL.
        Raises ConfigError (nothing queued) for a step outside ``[0, 2**63)`` or not a whole
        number, or a value that is not a single number; the message names the metric.
        """
        now = time.time()
        try:
            steps = check_steps(steps_completed)
        except ConfigError as exc:
            names = ", ".join(repr(str(n)) for n in metrics) or "(none)"
            raise ConfigError(f"{group} metrics {names}: {exc}") from None
        points = [(str(group), steps, str(name), metric_value(str(name), value), now)
                  for name, value in metrics.items()]
        for point in points:
            self._queue.put(point)

    def progress(self, fraction: float) -> None:
        """Queue the trial's progress in [0, 1] (ConfigError otherwise); caller's thread, never blocks.

        It is written promptly, together with the metrics queued before it: within about
        ``progress_seconds`` of the previous write, not at the next periodic flush.
        """
        self._queue.put(_Progress(check_fraction(fraction)))

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything queued so far has been written (or its write failed and was
        logged). False if ``timeout`` passed first; True at once if the writer has stopped."""
        if not self._thread.is_alive():
            return True
        marker = _Flush()
        self._queue.put(marker)
        return marker.done.wait(timeout)

    def close(self) -> None:
        """Write everything queued, then stop the thread. Blocks until then; idempotent."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    # -- the writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        stop = False
        while not stop:
            batch, progress, markers, stop = self._collect()
            if batch or progress is not None:
                self._write(batch, progress)
            for marker in markers:
                marker.done.set()

    def _write(self, batch: list[tuple], progress: float | None) -> None:
        try:
            self._tracker.add_metrics(self._trial_id, self._attempt_id, batch, progress=progress)
        except Exception as exc:  # noqa: BLE001 - never let metrics kill the run
            log.warning("unbroken: could not write %d metric points: %s", len(batch), exc)
        self._last_write = time.monotonic()

    def _collect(self) -> tuple[list[tuple], float | None, list[_Flush], bool]:
        """Gather one batch: until the flush deadline, a full batch, a flush marker or stop.

        A progress update moves the deadline to ``progress_seconds`` after the last write.
        """
        batch: list[tuple] = []
        progress, markers = None, []
        deadline = time.monotonic() + self._flush_seconds
        while len(batch) < self._batch_size:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _STOP:
                return batch, progress, markers, True
            if isinstance(item, _Flush):
                markers.append(item)
                break
            if isinstance(item, _Progress):
                progress = item.fraction
                deadline = min(deadline, self._last_write + self._progress_seconds)
            else:
                batch.append(item)
        return batch, progress, markers, False
