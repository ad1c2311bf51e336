"""The JSON shapes shared by `ls` and `show`: TRIAL and ATTEMPT (documented in README; keys are
only ever added, never removed or renamed).

Statuses are shown as readers should see them: a "running" trial or attempt whose process is
provably gone (SIGKILL, power loss: nothing recorded its end) shows as "lost"; the index itself
is not changed (readers never write).
"""

from __future__ import annotations

from typing import Any

from ..tracking import Attempt, Tracker, Trial, attempt_state, effective_status

#: The keys of ATTEMPT taken from the attempt's row, in the documented order.
_ATTEMPT_FIELDS = ("number", "started_at", "ended_at", "host", "pid", "launcher", "exit_code", "signal",
                   "end_reason", "message", "log_path", "restored_uuid", "restored_steps", "slurm_job_id",
                   "slurm_array_task", "slurm_nodes", "slurm_restarts")


def trial_json(tracker: Tracker, trial: Trial, attempts: list[Attempt] | None = None) -> dict[str, Any]:
    """The TRIAL object of ``ls``/``show --json``; ``status`` is "lost" for a running trial whose
    processes are all gone (see :func:`unbroken.tracking.effective_status`)."""
    attempts = tracker.attempts(trial.id) if attempts is None else attempts
    committed = [c.steps_completed for c in tracker.checkpoints(trial.id) if c.state == "committed"]
    return {
        "ref": trial.ref, "experiment": trial.experiment, "number": trial.number,
        "status": effective_status(tracker, trial, attempts),
        "message": trial.message, "steps_completed": trial.steps_completed, "progress": trial.progress,
        "attempts": len(attempts), "restarts": max(0, len(attempts) - 1),
        "latest_checkpoint_steps": max(committed, default=None), "hparams": trial.hparams,
        "command": trial.command, "storage": trial.storage,
        "created_at": trial.created_at, "updated_at": trial.updated_at,
    }


def attempt_json(attempt: Attempt) -> dict[str, Any]:
    """The ATTEMPT object of ``show --json``: its row without the ids, ``duration_s`` (null while
    it runs) and ``state``: "running", its end reason, or "lost" when its process is gone."""
    ended = attempt.ended_at
    return {**{k: getattr(attempt, k) for k in _ATTEMPT_FIELDS},
            "duration_s": None if ended is None else ended - attempt.started_at,
            "state": attempt_state(attempt)}
