"""The trial side of a sweep: count iterations, report results, checkpoint, end segments.

A :class:`TrialSession` wraps the process's :class:`~unbroken.Run` and the driver's
:class:`~.protocol.Directive`. Trial code reaches it in one of three ways:

* a command of ``unbroken sweep run FILE -- CMD`` uses :func:`trial`::

      with unbroken.sweep.trial() as t:
          state = unbroken.State(w=w, rng=rng)
          t.restore(state)                 # own newest checkpoint, or the copy an exploit made
          while not t.over:
              ...
              t.report(loss=loss)          # one iteration; saves `state` when due

* the worker (:mod:`.worker`) drives a Tune ``Trainable`` through the session;
* the Tune function API (``unbroken.tune.report`` / ``get_checkpoint``) calls the session of
  the process.

Iteration ``i`` (``training_iteration``) is the number of results reported so far, restored
from the checkpoint's ``steps_completed``. The segment is over when the iteration reaches the
directive's ``stop_at`` or the trial is done (``done`` in a result, or a stop condition met:
``result[key] >= value`` for any key of ``stop``, as in Ray Tune). At the end of a segment the
session saves (when the trial saves at all), waits for the commit, then writes the segment's
result file for the driver.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ..checkpoint import Manifest, State, keep_latest
from ..errors import CheckpointGone, ConfigError, CorruptCheckpoint
from ..runtime.policy import never
from ..runtime.run import Run
from .protocol import META_KEY, Directive, SegmentResult, plain

log = logging.getLogger("unbroken")

#: The session of this process (the function API finds it here).
_CURRENT: "TrialSession | None" = None


class TrialSession:
    """See the module docstring. Use from the training thread."""

    def __init__(self, run: Run, directive: Directive):
        self.run, self.directive = run, directive
        self.config: dict[str, Any] = dict(directive.config)
        self.iteration = 0
        self.last_result: dict[str, Any] | None = None
        self.done = False
        self.last_checkpoint: str | None = None
        self._time_before = 0.0
        self._started = time.monotonic()
        self._state: State | None = None
        run.should_preempt()  # installs the stop handlers now: a SIGTERM from the driver saves and stops

    # -- where to start ------------------------------------------------------------------------
    def candidates(self) -> list[Manifest]:
        """Checkpoints to resume from, best first: most steps; among equals the directive's, then newest."""
        wanted = self.directive.restore
        found = list(self.run.checkpoint.candidates())
        return sorted(found, key=lambda m: (-m.steps_completed, m.uuid != wanted, -m.created_at))

    def restore_files(self, load: Callable[[Path, Manifest], None]) -> Manifest | None:
        """Give ``load(path, manifest)`` the best checkpoint that verifies; None on a fresh trial."""
        for manifest in self.candidates():
            try:
                with self.run.checkpoint.restore_path(manifest.uuid) as path:
                    load(path, manifest)
            except (CorruptCheckpoint, CheckpointGone):
                continue  # reported by the run; the next one is tried
            self.adopt(manifest)
            return manifest
        return None

    def restore(self, state: State, *, allow_pickle: bool = False) -> int:
        """Restore ``state`` from the newest good checkpoint (see :meth:`Run.restore`); return the iteration.

        ``state`` is then what :meth:`report` saves.
        """
        self._state = state
        steps = self.run.restore(state, allow_pickle=allow_pickle)
        if steps:
            newest = max((m for m in self.run.checkpoint.list() if m.steps_completed == steps),
                         key=lambda m: m.created_at)
            self.adopt(newest)
        return self.iteration

    def adopt(self, manifest: Manifest) -> None:
        """Continue from ``manifest``: its iteration, last result and time."""
        record = manifest.metadata.get(META_KEY) or {}
        self.iteration = manifest.steps_completed
        self.last_result = record.get("result")
        self.done = bool(record.get("done"))
        self._time_before = float(record.get("time_total_s") or 0.0)
        self._started = time.monotonic()
        self.last_checkpoint = manifest.uuid

    # -- one iteration ---------------------------------------------------------------------------
    @property
    def segment_over(self) -> bool:
        """True when the segment ended: the trial is done or reached ``stop_at``."""
        stop_at = self.directive.stop_at
        return self.done or (stop_at is not None and self.iteration >= stop_at)

    @property
    def over(self) -> bool:
        """True when the loop must end: the segment is over, or a stop was requested (the state is then
        saved by :meth:`report`, and the process exits 75 to be resumed)."""
        return self.segment_over or self.run.should_preempt()

    def record(self, metrics: Mapping[str, Any]) -> dict[str, Any]:
        """Count one iteration with ``metrics``; report them; return the full result (Ray Tune's keys added)."""
        if not isinstance(metrics, Mapping):
            raise ConfigError(f"a result must be a dict of metrics, not {type(metrics).__name__}")
        self.iteration += 1
        result = plain(dict(metrics))
        result.update(training_iteration=self.iteration, trial_id=str(self.directive.trial),
                      time_total_s=self._time_before + time.monotonic() - self._started)
        self.done = bool(result.get("done")) or self._stop_condition(result)
        result["done"] = self.done
        self.last_result = result
        numbers = {k: v for k, v in result.items() if _reportable(k, v)}
        if numbers:
            self.run.report(self.iteration, **numbers)
        return result

    def _stop_condition(self, result: Mapping[str, Any]) -> bool:
        for key, limit in (self.directive.stop or {}).items():
            value = result.get(key)
            if _reportable(key, value) and value >= limit:
                return True
        return False

    def checkpoint_due(self, result: Mapping[str, Any]) -> bool:
        """Whether this iteration saves: asked for, by frequency, or at the end of the segment."""
        d = self.directive
        if result.get("should_checkpoint") or (d.checkpoint_freq and self.iteration % d.checkpoint_freq == 0):
            return True
        if self.segment_over:
            return d.checkpoint_at_end if self.done else d.save_at_pause
        return False

    def metadata(self) -> dict[str, Any]:
        """The metadata of a checkpoint of this iteration (the sweep's record of this point)."""
        return {"steps_completed": self.iteration,
                META_KEY: {"result": self.last_result, "done": self.done, "config": self.config,
                           "segment": self.directive.segment, "time_total_s": self._time_before +
                           time.monotonic() - self._started}}

    def report(self, **metrics: Any) -> dict[str, Any]:
        """Record one iteration (State API): saves the restored ``state`` when due, the last one committed."""
        result = self.record(metrics)
        stopping = self.run.should_preempt()
        if self._state is not None and (self.checkpoint_due(result) or stopping):
            self.last_checkpoint = self.run.save(self._state, self.iteration, metadata={META_KEY: self.metadata()[META_KEY]},
                                                 wait=self.segment_over or stopping)
        return result

    def upload(self, folder: str | Path) -> str:
        """Commit the files of ``folder`` as this iteration's checkpoint; return its uuid."""
        self.last_checkpoint = self.run.checkpoint.upload(folder, self.metadata())
        return self.last_checkpoint

    # -- the end ---------------------------------------------------------------------------------
    def finish(self) -> None:
        """Tell the driver how the segment ended (after every save is committed). Nothing if preempted."""
        self.run.wait_for_saves()
        if self.run.preempted or not self.segment_over:
            return
        SegmentResult(self.directive.segment, self.iteration, self.done, self.last_result,
                      self.last_checkpoint).write(self.directive.result_path())


def _reportable(key: str, value: Any) -> bool:
    return (key not in ("done", "should_checkpoint") and not isinstance(value, bool)
            and isinstance(value, (int, float)) and math.isfinite(value))


def current() -> TrialSession | None:
    """The session of this process, or None outside a sweep trial."""
    return _CURRENT


@contextlib.contextmanager
def trial(**init_options: Any) -> Iterator[TrialSession]:
    """Join this process's sweep trial (started by the driver); see the module docstring.

    ``init_options`` go to :func:`unbroken.init` (save and retention are the sweep's). Raises
    ConfigError outside a sweep. The segment's result is written when the block ends normally.
    """
    global _CURRENT
    from ..runtime.init import init  # noqa: PLC0415 - runtime is below; kept lazy for import cost

    directive = Directive.from_env()
    if directive is None:
        raise ConfigError("this process was not started by a sweep (no $UNBROKEN_SWEEP_TRIAL): run it with "
                          "`unbroken sweep run SWEEP.yaml -- CMD`")
    with init(save=never(), keep=keep_latest(directive.keep), **init_options) as run:
        session = TrialSession(run, directive)
        _CURRENT = session
        try:
            yield session
            session.finish()
        finally:
            _CURRENT = None
