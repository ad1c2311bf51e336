"""What happened: the index of experiments, trials, attempts, checkpoints and metrics, in SQLite
or PostgreSQL (:func:`resolve_db_url` chooses; :meth:`Tracker.open` opens)."""

from .index import Tracker
from .reconcile import ReconcileReport, reconcile_checkpoints
from .records import Attempt, CheckpointRecord, Experiment, MetricPoint, Trial
from .status import (END_REASONS, TRIAL_STATUS_OF_END_REASON, TRIAL_STATUSES, attempt_state, effective_status,
                     trial_status_for)
from .trials import join_trial
from .url import resolve_db_url
from .values import check_steps, metric_value

__all__ = [
    "Attempt", "CheckpointRecord", "END_REASONS", "Experiment", "MetricPoint", "ReconcileReport",
    "TRIAL_STATUSES", "TRIAL_STATUS_OF_END_REASON", "Tracker", "Trial", "attempt_state", "check_steps",
    "effective_status", "join_trial", "metric_value", "reconcile_checkpoints", "resolve_db_url", "trial_status_for",
]
