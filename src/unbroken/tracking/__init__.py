"""What happened: the index of experiments, trials, attempts, checkpoints and metrics."""

from .index import Attempt, CheckpointRecord, Experiment, MetricPoint, Tracker, Trial

__all__ = ["Attempt", "CheckpointRecord", "Experiment", "MetricPoint", "Tracker", "Trial"]
