"""What happened: the index of experiments, trials, attempts, checkpoints and metrics."""

from .index import Tracker
from .reconcile import ReconcileReport, reconcile_checkpoints
from .records import Attempt, CheckpointRecord, Experiment, MetricPoint, Trial
from .status import (END_REASONS, TRIAL_STATUS_OF_END_REASON, TRIAL_STATUSES, attempt_state, effective_status,
                     trial_status_for)
from .trials import join_trial
from .values import check_steps, metric_value

__all__ = [
    "Attempt", "CheckpointRecord", "END_REASONS", "Experiment", "MetricPoint", "ReconcileReport",
    "TRIAL_STATUSES", "TRIAL_STATUS_OF_END_REASON", "Tracker", "Trial", "attempt_state", "check_steps",
    "effective_status", "join_trial", "metric_value", "reconcile_checkpoints", "trial_status_for",
]
