"""The run's writes to the tracking index: never fatal to the training.

The index is for people; the checkpoints are the truth. A write that fails (disk full, a
locked or damaged database) is logged once with its real cause, as a warning, and the run
goes on; ``unbroken reindex`` catches the checkpoint rows up later. Every method may be called
from any thread (the tracker serialises its connection).
"""

from __future__ import annotations

from ..checkpoint import Manifest
from ..errors import TrackingError
from ..tracking import Tracker, reconcile_checkpoints, trial_status_for
from ..tracking.guarded import GuardedWrites


class RunIndex:
    """What one attempt writes: checkpoint rows, its restore point, how it ended."""

    def __init__(self, tracker: Tracker, trial_id: int, attempt_id: int, *, supervised: bool):
        self.tracker = tracker
        self.trial_id, self.attempt_id = trial_id, attempt_id
        self.supervised = supervised
        self._safe = GuardedWrites()
        self._restored = False

    def reconcile(self, committed: list[Manifest]) -> None:
        """Bring the trial's checkpoint rows in line with what storage holds (at start: cheap then)."""
        self._safe("reconcile the checkpoints", reconcile_checkpoints, self.tracker, self.trial_id, committed)

    def record_checkpoint(self, manifest: Manifest, *, by_this_attempt: bool = True) -> None:
        self._safe("record checkpoint", self.tracker.record_checkpoint, self.trial_id, manifest.uuid,
                   manifest.steps_completed, created_at=manifest.created_at, size_bytes=manifest.size,
                   metadata=manifest.metadata, attempt_id=self.attempt_id if by_this_attempt else None)

    def mark_checkpoint(self, uuid: str, state: str, message: str | None = None,
                        manifest: Manifest | None = None) -> None:
        """Set a checkpoint's state; index it first if the index never saw it (``manifest`` given)."""
        if manifest is not None and not self._indexed(uuid):
            self.record_checkpoint(manifest, by_this_attempt=False)
        self._safe("mark checkpoint", self.tracker.mark_checkpoint, uuid, state, message)

    def record_restore(self, uuid: str, steps_completed: int) -> bool:
        """Record where this attempt resumed (first restore only); True if this was the first."""
        if self._restored:
            return False
        self._restored = True
        self._safe("record the restore", self.tracker.update_attempt, self.attempt_id, restored_uuid=uuid,
                   restored_steps=steps_completed)
        return True

    def end(self, end_reason: str, message: str | None) -> None:
        """Record how the attempt ended. Under a supervisor the supervisor ends the row: the child
        only leaves its message (e.g. the exception) for it."""
        if self.supervised:
            if message:
                self._safe("report the outcome", self.tracker.update_attempt, self.attempt_id, message=message)
            return
        self._safe("end the attempt", self.tracker.end_attempt, self.attempt_id, end_reason, message=message)
        self._safe("update the trial", self.tracker.update_trial, self.trial_id,
                   status=trial_status_for(end_reason), message=message)

    def close(self) -> None:
        self._safe("close", self.tracker.close)

    def _indexed(self, uuid: str) -> bool:
        try:
            self.tracker.checkpoint(uuid)
            return True
        except (TrackingError, LookupError):
            return False
