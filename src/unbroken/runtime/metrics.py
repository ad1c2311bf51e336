"""Metrics reporting, batched and written off the training thread.

``put`` validates in the caller's thread (a bad step or value is a ConfigError there, naming the
metric) and appends to a queue (microseconds). A daemon thread writes batches into the tracking
index every ``flush_seconds``, when ``batch_size`` points wait, soon after a progress update
(at most one progress write per ``progress_seconds``), and on :meth:`flush`/:meth:`close`.

A failing write (a full disk, a database server gone) never stops training: the points stay
queued, in order, and are written with the next batch, tried again after a growing delay
(``retry_seconds``, doubling up to 30 s) and at every flush. What is kept is bounded: at most
``max_pending`` points (the oldest are dropped beyond) and ``max_retries`` failed writes in a
row (then the waiting points are dropped). Every failure, drop and recovery is logged, naming
the cause and the number of points.
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
#: The longest wait between two tries of a failed write (seconds).
MAX_RETRY_SECONDS = 30.0


class _Progress(NamedTuple):
    fraction: float


class _Flush:
    """A marker in the queue: set once everything queued before it has been written."""

    def __init__(self) -> None:
        self.done = threading.Event()


class MetricsWriter:
    """Background writer of metric points and progress for one trial attempt."""

    def __init__(self, tracker: Tracker, trial_id: int, attempt_id: int | None,
                 flush_seconds: float = 1.0, batch_size: int = 1000, progress_seconds: float = 0.1, *,
                 max_pending: int = 100_000, max_retries: int = 20, retry_seconds: float = 1.0):
        self._tracker, self._trial_id, self._attempt_id = tracker, trial_id, attempt_id
        self._flush_seconds, self._batch_size = flush_seconds, batch_size
        self._progress_seconds = progress_seconds
        self._last_write = float("-inf")  # monotonic time of the last write (writer thread only)
        self._backlog = _Backlog(max_pending, max_retries, retry_seconds)  # writer thread only
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
        """Block until everything queued so far has been written, or its write was tried once
        more and failed (logged; the points stay queued for later tries). False if ``timeout``
        passed first; True at once if the writer has stopped."""
        if not self._thread.is_alive():
            return True
        marker = _Flush()
        self._queue.put(marker)
        return marker.done.wait(timeout)

    def close(self) -> None:
        """Write everything queued (one last try: what fails then is dropped and logged), then
        stop the thread. Blocks until then; idempotent."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    @property
    def pending(self) -> int:
        """How many points wait for a failed write to be retried, until they are written or
        dropped (a snapshot; any thread)."""
        return self._backlog.waiting

    # -- the writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        stop = False
        while not stop:
            batch, progress, markers, stop = self._collect()
            self._write(batch, progress, now=bool(markers) or stop, last=stop)
            for marker in markers:
                marker.done.set()

    def _write(self, batch: list[tuple], progress: float | None, *, now: bool, last: bool) -> None:
        """Write the backlog and ``batch`` (in that order) with ``progress``, if there is anything
        and a retry is due (or ``now``); on failure keep them for the next try."""
        points, progress = self._backlog.take(batch, progress)
        if not points and progress is None:
            return
        if not (now or self._backlog.due()):
            self._backlog.keep(points, progress)
            return
        try:
            self._tracker.add_metrics(self._trial_id, self._attempt_id, points, progress=progress)
        except ConfigError as exc:  # a value the index refuses: trying again cannot help
            log.error("unbroken: dropped %d metric points of trial %s that the index refuses: %s",
                      len(points), self._trial_id, exc)
            self._backlog.reset()
        except Exception as exc:  # noqa: BLE001 - never let metrics kill the run
            self._backlog.failed(points, progress, exc, self._trial_id, last=last)
        else:
            self._backlog.succeeded(len(points), self._trial_id)
        self._last_write = time.monotonic()

    def _collect(self) -> tuple[list[tuple], float | None, list[_Flush], bool]:
        """Gather one batch: until the flush deadline, a full batch, a flush marker or stop.

        A progress update moves the deadline to ``progress_seconds`` after the last write; a
        backlog of failed points, to their next retry.
        """
        batch: list[tuple] = []
        progress, markers = None, []
        deadline = min(time.monotonic() + self._flush_seconds, self._backlog.retry_at)
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


class _Backlog:
    """Points (and the latest progress) whose write failed, in order, waiting for the next try.

    Writer thread only (``waiting`` may be read from any thread). Bounded in size
    (``max_points``, the oldest dropped beyond) and in failed writes in a row (``max_failures``,
    then everything waiting is dropped); the delay between tries doubles from ``first_delay``
    up to :data:`MAX_RETRY_SECONDS`.
    """

    def __init__(self, max_points: int, max_failures: int, first_delay: float):
        self.max_points, self.max_failures, self.first_delay = max_points, max_failures, first_delay
        self.points: list[tuple] = []
        self.progress: float | None = None
        self.waiting = 0  # points kept after a failure and not yet written or dropped
        self.failures = 0
        self.retry_at = float("inf")  # monotonic time of the next try; inf while nothing waits
        self.failing_since = 0.0

    def take(self, batch: list[tuple], progress: float | None) -> tuple[list[tuple], float | None]:
        """Everything waiting followed by ``batch``, and the newest progress; the backlog keeps
        its failure count (see :meth:`keep`, :meth:`failed`, :meth:`succeeded`)."""
        points, self.points = self.points + batch, []
        progress, self.progress = (progress if progress is not None else self.progress), None
        return points, progress

    def due(self) -> bool:
        """Whether a write may be tried now: always, unless the last one failed and its delay runs."""
        return not self.failures or time.monotonic() >= self.retry_at

    def keep(self, points: list[tuple], progress: float | None) -> None:
        """Put ``points`` back (after a failure, or while a retry is not due), dropping the oldest
        beyond ``max_points``."""
        excess = len(points) - self.max_points
        if excess > 0:
            log.error("unbroken: dropped the %d oldest metric points: more than %d wait for the tracking index",
                      excess, self.max_points)
            points = points[excess:]
        self.points, self.progress, self.waiting = points, progress, len(points)

    def failed(self, points: list[tuple], progress: float | None, exc: Exception, trial_id: int, *,
               last: bool) -> None:
        now = time.monotonic()
        if not self.failures:
            self.failing_since = now
        self.failures += 1
        if last or self.failures > self.max_failures:
            why = "at close" if last else f"after {self.failures} failed writes in {now - self.failing_since:.0f} s"
            log.error("unbroken: dropped %d metric points of trial %s: the tracking index could not be written %s "
                      "(%s)", len(points), trial_id, why, exc)
            self.reset()
            return
        delay = min(self.first_delay * 2 ** (self.failures - 1), MAX_RETRY_SECONDS)
        self.retry_at = now + delay
        log.warning("unbroken: could not write %d metric points of trial %s to the tracking index (%s); they stay "
                    "queued, next try in %.1f s (failure %d of at most %d)", len(points), trial_id, exc, delay,
                    self.failures, self.max_failures)
        self.keep(points, progress)

    def succeeded(self, written: int, trial_id: int) -> None:
        if self.failures:
            log.warning("unbroken: the tracking index is writable again: wrote %d metric points of trial %s that "
                        "waited %.1f s", written, trial_id, time.monotonic() - self.failing_since)
        self.reset()

    def reset(self) -> None:
        self.points, self.progress, self.waiting, self.failures, self.retry_at = [], None, 0, 0, float("inf")
