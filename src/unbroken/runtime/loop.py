"""The high-level state API behind ``run.restore/save/maybe_save/steps``.

One :class:`StateLoop` per run, used from the training thread. It restores the newest good
checkpoint into a :class:`~unbroken.State` (falling back past corrupt ones), schedules saves by
the save policy, owns the :class:`~unbroken.checkpoint.saving.saver.Saver` (asynchronous saves,
one in flight) and turns a stop request into a save at the step boundary.

With a deadline (``PreemptContext.deadline``: the Slurm end time, ``--time-limit``, a spot
notice), :meth:`StateLoop.steps` measures its steps and its saves (from the call until committed,
reported by the save handles) and saves and stops at the last boundary from which the final
checkpoint is still committed before the deadline (:func:`~.policy.stop_before_deadline`),
rather than at the deadline or at a signal that may come too late.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterator

from ..checkpoint import State
from ..checkpoint.format.manifest import Manifest
from ..checkpoint.io.writer import SaveHandle
from ..checkpoint.saving import statefile
from ..checkpoint.saving.saver import Saver
from ..checkpoint.store.pending import check_steps
from ..errors import BackgroundSaveError, CheckpointGone, CorruptCheckpoint
from .checkpointing import CheckpointContext
from .interval import auto_interval
from .policy import DurationEstimate, SavePolicy, stop_before_deadline
from .preempt import PreemptContext
from .training import TrainContext

log = logging.getLogger("unbroken")

#: Progress is reported at most this often (and at the last step).
PROGRESS_SECONDS = 0.5


class StateLoop:
    """Restore, save on policy, stop at a boundary; see the module docstring."""

    def __init__(self, checkpoint: CheckpointContext, train: TrainContext, preempt: PreemptContext,
                 policy: SavePolicy, *, label: str, clock: Callable[[], float] = time.monotonic,
                 incremental: bool | None = None):
        self.checkpoint, self.train, self.preempt = checkpoint, train, preempt
        self.policy = policy
        self.incremental = incremental  # None: $UNBROKEN_INCREMENTAL decides (see Saver)
        self.state: State | None = None
        self.loop_finished = False
        self.stopped_for_preemption = False
        self._label = label
        self._clock = clock
        self._last_save_steps = -1
        self._last_save_time = clock()
        self._saver: Saver | None = None
        self._last_progress = float("-inf")
        self.step_time = DurationEstimate()
        self.save_time = DurationEstimate()  # added to from the writer thread (see DurationEstimate)

    # -- restoring -------------------------------------------------------------------------------
    def restore(self, state: State, *, allow_pickle: bool = False, strict: bool = True) -> int:
        """Load the newest good checkpoint into ``state``; return its ``steps_completed`` (0 if none).

        Corrupt checkpoints are reported and skipped (``state`` untouched by them); one deleted
        meanwhile, or one not written from a State (``store_path``, DCP), is skipped. The checkpoint
        being read is leased against deletion.
        """
        self.state = state
        self.wait_for_saves()
        for manifest in self.checkpoint.candidates():
            if not statefile.written_from_state(manifest):
                continue  # files stored with store_path (or DCP): restore_path reads them
            try:
                with self.checkpoint.store.reading(manifest.uuid):
                    directory = self.checkpoint.store.local_copy(manifest.uuid)
                    statefile.restore(state, directory, manifest, allow_pickle=allow_pickle, strict=strict,
                                      resolve=self.checkpoint.store.local_copy)  # referenced files too
            except CheckpointGone:
                continue
            except CorruptCheckpoint as exc:
                self.checkpoint.report_corrupt(manifest.uuid, str(exc))
                continue
            self.checkpoint.store.mark_verified(manifest.uuid)
            self._last_save_steps = manifest.steps_completed
            self.checkpoint.record_restore(manifest)
            self._prepare_saves(state, restored=manifest)
            return manifest.steps_completed
        log.info("unbroken: %s starts from scratch (no checkpoint)", self._label)
        self._prepare_saves(state)
        return 0

    # -- saving ----------------------------------------------------------------------------------
    def save(self, state: State, steps_completed: int, *, metrics: dict[str, Any] | None = None,
             metadata: dict[str, Any] | None = None, wait: bool = False) -> str:
        """Checkpoint ``state``; see :meth:`unbroken.Run.save`."""
        steps_completed = check_steps(steps_completed)
        meta = {**(metadata or {}), **({"metrics": _plain_metrics(metrics)} if metrics else {})}
        handle = self._saves.save(state, steps_completed, meta, wait=wait)
        self._last_save_steps = steps_completed
        self._last_save_time = self._clock()
        self.train.report_metrics("checkpoint", steps_completed, {"stall_s": handle.stall_s, "wait_s": handle.wait_s})
        return handle.uuid

    def maybe_save(self, state: State, steps_completed: int, *, metrics: dict[str, Any] | None = None) -> str | None:
        """Save if the policy says so or a stop was requested; see :meth:`unbroken.Run.maybe_save`."""
        if self._saver is not None:
            self._saver.check()
        elapsed = self._clock() - self._last_save_time
        if self.preempt.should_preempt() and steps_completed > self._last_save_steps:
            return self.save(state, steps_completed, metrics=metrics)
        if self.policy.due(steps_completed, self._last_save_steps, elapsed):
            return self.save(state, steps_completed, metrics=metrics)
        return None

    def wait_for_saves(self) -> None:
        """Block until the save in flight (if any) is committed; raise BackgroundSaveError if it failed."""
        if self._saver is not None:
            self._saver.wait()

    def finish_saves(self) -> BackgroundSaveError | None:
        """Wait for the save in flight; return (not raise) its failure."""
        try:
            self.wait_for_saves()
        except BackgroundSaveError as error:  # logged by the writer when it happened
            return error
        return None

    @property
    def saver(self) -> Saver | None:
        """The saver, once the first save or restore created it."""
        return self._saver

    @property
    def _saves(self) -> Saver:
        if self._saver is None:
            self._saver = Saver(self.checkpoint.store, on_committed=self._on_committed, incremental=self.incremental)
        return self._saver

    def _prepare_saves(self, state: State, restored: Manifest | None = None) -> None:
        """Fault in the snapshot buffer in the background now, not during the first save (and seed
        it with the ``restored`` checkpoint, for incremental saves)."""
        try:
            self._saves.prepare(state, restored=restored)
        except Exception as exc:  # noqa: BLE001 - an optimisation; the save itself reports real problems
            log.debug("unbroken: could not prepare the snapshot buffer: %s", exc)

    def _on_committed(self, handle: SaveHandle) -> None:
        """Writer thread: a save was committed; remember how long it took (call -> committed)."""
        if handle.save_s is not None:
            self.save_time.add(handle.save_s)
        for policy in self._interval_policies():
            before = policy.decision().interval_s
            policy.observe_save(handle.stall_s, handle.save_s)
            if abs(policy.decision().interval_s - before) > 0.1 * before:
                log.info("%s", policy.decision().log_line())
        self.train.report_metrics("checkpoint", handle.steps_completed, {
            "save_s": handle.save_s, "bytes": handle.nbytes, "bytes_written": handle.bytes_written})

    @property
    def self_tuning(self) -> bool:
        """Whether the save policy is (or contains) an :class:`auto_interval`."""
        return bool(self._interval_policies())

    def observe_history(self, attempts: list[tuple[float, bool]], last_stall_s: float | None = None) -> None:
        """This trial's earlier attempts ``(seconds, ended by a failure)`` and the stall of the last save
        an earlier attempt recorded (if any), for a self-tuning interval."""
        for policy in self._interval_policies():
            policy.observe_history(attempts)
            if last_stall_s is not None:
                policy.observe_save(last_stall_s)
            log.info("%s", policy.decision().log_line())

    def _interval_policies(self) -> list[auto_interval]:
        stack, found = [self.policy], []
        while stack:
            policy = stack.pop()
            stack.extend(getattr(policy, "policies", ()))
            if isinstance(policy, auto_interval):
                found.append(policy)
        return found

    # -- the loop --------------------------------------------------------------------------------
    def steps(self, start: int, total: int | None = None, *, state: State | None = None) -> Iterator[int]:
        """Yield ``start, start + 1, ...`` (up to ``total``), saving at boundaries; see :meth:`unbroken.Run.steps`."""
        state = state if state is not None else self.state
        step = start
        while total is None or step < total:
            if self.preempt.should_preempt() or self._deadline_near(state):
                self._stop(state, step)
                return
            started = self._clock()
            yield step
            self.step_time.add(self._clock() - started)
            step += 1
            if state is not None:
                self.maybe_save(state, step)
            if total and (step == total or self._clock() - self._last_progress >= PROGRESS_SECONDS):
                self._last_progress = self._clock()
                self.train.report_progress(min(1.0, step / total))
        if state is not None and step > self._last_save_steps:
            self.save(state, step)
        self.loop_finished = True

    def _deadline_near(self, state: State | None) -> bool:
        """At a boundary: is this the last one from which a save commits before the deadline? (requests the stop)"""
        left = self.preempt.seconds_left()
        step_s = self.step_time.value
        if left is None or state is None or step_s is None:
            return False
        in_flight = self._saver.in_flight if self._saver is not None else None
        save_s = self.save_time.value
        in_flight_s = 0.0
        if in_flight is not None and not in_flight.done():
            in_flight_s = max(0.0, (save_s or 0.0) - (self._clock() - self._last_save_time))  # its estimate, less its age
        if not stop_before_deadline(left, step_s, save_s, in_flight_s):
            return False
        self.preempt.request(f"deadline in {left:.1f} s: saving now so that the checkpoint is committed before it")
        return True

    def _stop(self, state: State | None, steps_completed: int) -> None:
        if state is not None and steps_completed > self._last_save_steps:
            self.save(state, steps_completed, wait=True)  # committed before the process may exit
        self.wait_for_saves()
        self.stopped_for_preemption = True
        log.warning("unbroken: %s stopping at step %d (%s); state saved", self._label, steps_completed,
                    self.preempt.reason)


def _plain_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in metrics.items()}
